package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/csi"
)

// fakeRegistry answers LocateVolume with a fixed response or error.
type fakeRegistry struct {
	apiv1.RegistryClient
	resp *apiv1.LocateVolumeResponse
	err  error
}

func (f *fakeRegistry) LocateVolume(context.Context, *apiv1.LocateVolumeRequest, ...grpc.CallOption) (*apiv1.LocateVolumeResponse, error) {
	return f.resp, f.err
}

func replica(node, zone string, s apiv1.ReplicaState) *apiv1.ReplicaInfo {
	return &apiv1.ReplicaInfo{NodeId: node, Zone: zone, State: s}
}

const (
	inSync  = apiv1.ReplicaState_REPLICA_STATE_IN_SYNC
	syncing = apiv1.ReplicaState_REPLICA_STATE_SYNCING
	faulted = apiv1.ReplicaState_REPLICA_STATE_FAULTED
)

func TestRegistryLocatorPrimaryAddress(t *testing.T) {
	tests := []struct {
		name    string
		resp    *apiv1.LocateVolumeResponse
		err     error
		want    string
		wantErr error
	}{
		{"located", &apiv1.LocateVolumeResponse{PrimaryNbdAddress: "127.0.0.2:10809"}, nil, "127.0.0.2:10809", nil},
		{"no address yet", &apiv1.LocateVolumeResponse{}, nil, "", csi.ErrLocatorUnavailable},
		{"unknown volume", nil, status.Error(codes.NotFound, "no such volume"), "", csi.ErrVolumeNotFound},
		{"invalid id", nil, status.Error(codes.InvalidArgument, "bad id"), "", csi.ErrVolumeNotFound},
		{"primary not registered", nil, status.Error(codes.Unavailable, "primary has not registered"), "", csi.ErrLocatorUnavailable},
		{"controller down", nil, status.Error(codes.DeadlineExceeded, "timeout"), "", csi.ErrLocatorUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &registryLocator{client: &fakeRegistry{resp: tt.resp, err: tt.err}, timeout: time.Second}
			got, err := l.PrimaryAddress(context.Background(), "vol-1")
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("PrimaryAddress = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestLayoutHealth(t *testing.T) {
	tests := []struct {
		name      string
		replicas  []*apiv1.ReplicaInfo
		minInSync int32
		degraded  bool
		message   string
	}{
		{"all in sync", []*apiv1.ReplicaInfo{replica("a", "za", inSync), replica("b", "zb", inSync), replica("c", "zc", inSync)},
			2, false, "3 of 3 replicas in sync, primary a, epoch 4"},
		{"one faulted", []*apiv1.ReplicaInfo{replica("a", "za", inSync), replica("b", "zb", faulted), replica("c", "zc", inSync)},
			2, true, "2 of 3 replicas in sync, primary a, epoch 4; b in zb is faulted"},
		{"one syncing", []*apiv1.ReplicaInfo{replica("a", "za", inSync), replica("c", "zc", syncing)},
			0, true, "1 of 2 replicas in sync, primary a, epoch 4; c in zc is syncing"},
		{"below the minimum", []*apiv1.ReplicaInfo{replica("a", "za", inSync), replica("b", "zb", faulted), replica("c", "zc", syncing)},
			2, true, "1 of 3 replicas in sync, primary a, epoch 4; b in zb is faulted; c in zc is syncing; writes wait: fewer than minInSyncReplicas=2 in sync"},
		{"silent primary", []*apiv1.ReplicaInfo{replica("silent", "za", inSync), replica("b", "zb", inSync)},
			0, true, "2 of 2 replicas in sync, primary a, epoch 4; silent in za has stopped heartbeating"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := layoutHealth(&apiv1.Layout{Primary: "a", Epoch: 4, Replicas: tt.replicas, MinInSync: tt.minInSync}, []string{"silent"})
			if h.Degraded != tt.degraded || h.Message != tt.message {
				t.Errorf("health %+v, want degraded=%v %q", h, tt.degraded, tt.message)
			}
		})
	}
}
