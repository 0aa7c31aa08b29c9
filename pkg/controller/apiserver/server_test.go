package apiserver

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
	"github.com/trireme-csi/trireme/pkg/store"
)

func TestCodes(t *testing.T) {
	ctx := context.Background()
	e := controllertest.New(t, controllertest.SixNodes)
	srv := New(e.C)
	v, err := e.C.CreateVolume(ctx, controller.VolumeRequest{Name: "pvc-1", Size: 1 << 20, RequiredBytes: 1 << 20, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	register := func(edit func(*apiv1.RegisterNodeRequest)) error {
		req := &apiv1.RegisterNodeRequest{NodeId: "n", DataAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2", NbdAddress: "127.0.0.1:3"}
		edit(req)
		_, err := srv.RegisterNode(ctx, req)
		return err
	}
	fault := func(volume string, epoch uint64, node string) error {
		_, err := srv.ReportReplicaFaulted(ctx, &apiv1.ReportReplicaFaultedRequest{VolumeId: volume, Epoch: epoch, NodeId: node})
		return err
	}
	synced := func(volume string, epoch uint64, node string) error {
		_, err := srv.ReportReplicaSynced(ctx, &apiv1.ReportReplicaSyncedRequest{VolumeId: volume, Epoch: epoch, NodeId: node})
		return err
	}
	locate := func(volume, wantNBD string) error {
		resp, err := srv.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: volume})
		if err == nil && (resp.GetPrimaryNbdAddress() != wantNBD || resp.GetLayout().GetPrimary() != "a1") {
			return status.Errorf(codes.Unknown, "located %v", resp)
		}
		return err
	}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"register", func() error { return register(func(*apiv1.RegisterNodeRequest) {}) }, codes.OK},
		{"register without id", func() error { return register(func(r *apiv1.RegisterNodeRequest) { r.NodeId = "" }) }, codes.InvalidArgument},
		{"register without data address", func() error { return register(func(r *apiv1.RegisterNodeRequest) { r.DataAddress = "" }) }, codes.InvalidArgument},
		{"register negative capacity", func() error { return register(func(r *apiv1.RegisterNodeRequest) { r.CapacityBytes = -1 }) }, codes.InvalidArgument},
		{"heartbeat", func() error { _, err := srv.Heartbeat(ctx, &apiv1.HeartbeatRequest{NodeId: "n"}); return err }, codes.OK},
		{"heartbeat unknown node", func() error { _, err := srv.Heartbeat(ctx, &apiv1.HeartbeatRequest{NodeId: "zz"}); return err }, codes.NotFound},
		{"fault", func() error { return fault(v.ID, 1, "b1") }, codes.OK},
		{"stale fault", func() error { return fault(v.ID, 1, "c1") }, codes.OK},
		{"fault of the primary", func() error { return fault(v.ID, 2, "a1") }, codes.InvalidArgument},
		{"fault at a future epoch", func() error { return fault(v.ID, 3, "c1") }, codes.FailedPrecondition},
		{"fault of unknown volume", func() error { return fault(store.NewVolumeID(), 1, "b1") }, codes.NotFound},
		{"fault with bad volume id", func() error { return fault("../x", 1, "b1") }, codes.InvalidArgument},
		{"fault without node", func() error { return fault(v.ID, 2, "") }, codes.InvalidArgument},
		{"synced not syncing", func() error { return synced(v.ID, 2, "c1") }, codes.OK},
		{"synced not a replica", func() error { return synced(v.ID, 2, "c2") }, codes.InvalidArgument},
		{"locate", func() error { return locate(v.ID, "a1.nbd:10809") }, codes.OK},
		{"locate unknown volume", func() error { return locate(store.NewVolumeID(), "") }, codes.NotFound},
		{"locate bad volume id", func() error { return locate("", "") }, codes.InvalidArgument},
	}
	for _, tc := range tests {
		if err := tc.call(); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
