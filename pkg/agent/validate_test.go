package agent

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

func TestBadVolumeIDsAreInvalidArgument(t *testing.T) {
	a := startAgent(t, "node-1", "127.0.0.1", t.TempDir(), "")
	ids := []string{"", ".", "..", "../x", "a/b", "/abs", "vol 1", "vol\x00", "vøl", strings.Repeat("v", 129)}
	rpcs := map[string]func(context.Context, string) error{
		"CreateReplica": func(ctx context.Context, id string) error {
			_, err := a.client.CreateReplica(ctx, &apiv1.CreateReplicaRequest{VolumeId: id, SizeBytes: testSize})
			return err
		},
		"DeleteReplica": func(ctx context.Context, id string) error {
			_, err := a.client.DeleteReplica(ctx, &apiv1.DeleteReplicaRequest{VolumeId: id})
			return err
		},
		"GetVolume": func(ctx context.Context, id string) error {
			_, err := a.client.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: id})
			return err
		},
		"ChecksumReplica": func(ctx context.Context, id string) error {
			_, err := a.client.ChecksumReplica(ctx, &apiv1.ChecksumReplicaRequest{VolumeId: id})
			return err
		},
		"SetLayout": func(ctx context.Context, id string) error {
			l := layoutOf(id, 1, a, a)
			_, err := a.client.SetLayout(ctx, &apiv1.SetLayoutRequest{Layout: l})
			return err
		},
	}
	for name, call := range rpcs {
		for _, id := range ids {
			err := call(callCtx(t), id)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "volume_id") {
				t.Errorf("%s(%q) = %v, want InvalidArgument naming volume_id", name, id, err)
			}
		}
	}
	if got := a.agent.volumeIDs(); len(got) != 0 {
		t.Errorf("volumes after bad requests = %q, want none", got)
	}
}

func TestCreateReplica(t *testing.T) {
	a := startAgent(t, "node-1", "127.0.0.1", t.TempDir(), "")
	createReplica(t, a, "vol-1", testSize)
	tests := []struct {
		name  string
		req   *apiv1.CreateReplicaRequest
		code  codes.Code
		field string
	}{
		{"same size again", &apiv1.CreateReplicaRequest{VolumeId: "vol-1", SizeBytes: testSize}, codes.OK, ""},
		{"other size", &apiv1.CreateReplicaRequest{VolumeId: "vol-1", SizeBytes: 2 * testSize}, codes.AlreadyExists, ""},
		{"zero size", &apiv1.CreateReplicaRequest{VolumeId: "vol-2"}, codes.InvalidArgument, "size_bytes"},
		{"negative size", &apiv1.CreateReplicaRequest{VolumeId: "vol-2", SizeBytes: -4096}, codes.InvalidArgument, "size_bytes"},
		{"unaligned size", &apiv1.CreateReplicaRequest{VolumeId: "vol-2", SizeBytes: 4097}, codes.InvalidArgument, "size_bytes"},
		{"new volume", &apiv1.CreateReplicaRequest{VolumeId: "vol-2", SizeBytes: 4096}, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := a.client.CreateReplica(callCtx(t), tt.req)
			wantCode(t, err, tt.code)
			if !strings.Contains(status.Convert(err).Message(), tt.field) {
				t.Errorf("message %q does not name %s", status.Convert(err).Message(), tt.field)
			}
			if err == nil && (resp.GetVolume().GetSizeBytes() != tt.req.GetSizeBytes() || resp.GetVolume().GetVolumeId() != tt.req.GetVolumeId()) {
				t.Errorf("volume = %v, want %s of %d bytes", resp.GetVolume(), tt.req.GetVolumeId(), tt.req.GetSizeBytes())
			}
		})
	}
}

func TestSetLayoutRefusals(t *testing.T) {
	agents := startCluster(t, "")
	self, other := agents[0], agents[1]
	createReplica(t, self, "vol-1", testSize)
	setLayout(t, self, layoutOf("vol-1", 5, other, self, other))

	tests := []struct {
		name   string
		layout func() *apiv1.Layout
		code   codes.Code
		field  string
	}{
		{"no layout", func() *apiv1.Layout { return nil }, codes.InvalidArgument, "layout: required"},
		{"zero epoch", func() *apiv1.Layout { return layoutOf("vol-1", 0, self, self) }, codes.InvalidArgument, "layout.epoch"},
		{"zero size", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, self, self)
			l.SizeBytes = 0
			return l
		}, codes.InvalidArgument, "layout.size_bytes"},
		{"no primary", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, self, self)
			l.Primary = ""
			return l
		}, codes.InvalidArgument, "layout.primary"},
		{"no replicas", func() *apiv1.Layout { return layoutOf("vol-1", 6, self) }, codes.InvalidArgument, "layout.replicas"},
		{"primary not a replica", func() *apiv1.Layout { return layoutOf("vol-1", 6, agents[2], self, other) }, codes.InvalidArgument, "layout.primary"},
		{"syncing primary", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, self, self, other)
			l.Replicas[0].State = apiv1.ReplicaState_REPLICA_STATE_SYNCING
			return l
		}, codes.InvalidArgument, "layout.primary"},
		{"duplicate node", func() *apiv1.Layout { return layoutOf("vol-1", 6, self, self, self) }, codes.InvalidArgument, "layout.replicas[1].node_id"},
		{"empty node id", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, self, self, other)
			l.Replicas[1].NodeId = ""
			return l
		}, codes.InvalidArgument, "layout.replicas[1].node_id"},
		{"bad address", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, self, self, other)
			l.Replicas[1].Address = "127.0.0.2"
			return l
		}, codes.InvalidArgument, "layout.replicas[1].address"},
		{"unspecified state", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, self, self, other)
			l.Replicas[1].State = apiv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
			return l
		}, codes.InvalidArgument, "layout.replicas[1].state"},
		{"primary without local replica", func() *apiv1.Layout { return layoutOf("vol-9", 1, self, self, other) }, codes.FailedPrecondition, "holds no replica"},
		{"unknown volume on a replica node", func() *apiv1.Layout { return layoutOf("vol-9", 1, other, self, other) }, codes.NotFound, "vol-9"},
		{"size not a multiple of 4096", func() *apiv1.Layout {
			l := layoutOf("vol-1", 6, other, self, other)
			l.SizeBytes = 2*testSize + 512
			return l
		}, codes.InvalidArgument, "layout.size_bytes"},
		{"older epoch", func() *apiv1.Layout { return layoutOf("vol-1", 4, other, self, other) }, codes.FailedPrecondition, "stale layout"},
		{"same epoch, other content", func() *apiv1.Layout { return layoutOf("vol-1", 5, other, other, self) }, codes.FailedPrecondition, "same epoch"},
		{"same layout again", func() *apiv1.Layout { return layoutOf("vol-1", 5, other, self, other) }, codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := self.client.SetLayout(callCtx(t), &apiv1.SetLayoutRequest{Layout: tt.layout()})
			wantCode(t, err, tt.code)
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.field) {
				t.Errorf("message %q does not contain %q", msg, tt.field)
			}
		})
	}
}
