package agent

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

func TestRestartReopensReplicas(t *testing.T) {
	dir := t.TempDir()
	a := startAgent(t, "node-1", "127.0.0.1", dir, "")
	createReplica(t, a, "vol-1", testSize)
	createReplica(t, a, "vol-2", 2*testSize)
	setLayout(t, a, layoutOf("vol-1", 3, a, a))
	a.stop(t)

	b := startAgent(t, "node-1", "127.0.0.1", dir, "")
	resp, err := b.client.ListVolumes(callCtx(t), &apiv1.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}

	want := &apiv1.ListVolumesResponse{NodeId: "node-1", Zone: "zone-node-1", Volumes: []*apiv1.Volume{
		{VolumeId: "vol-1", SizeBytes: testSize, Epoch: 3, Role: apiv1.Role_ROLE_REPLICA},
		{VolumeId: "vol-2", SizeBytes: 2 * testSize, Role: apiv1.Role_ROLE_REPLICA},
	}}
	if !proto.Equal(resp, want) {
		t.Errorf("ListVolumes after restart =\n%v\nwant\n%v", resp, want)
	}
}

func TestDataDirIsExclusive(t *testing.T) {
	dir := t.TempDir()
	startAgent(t, "node-1", "127.0.0.1", dir, "")

	_, err := New(Config{NodeID: "node-2", DataDir: dir, ListenAddress: "127.0.0.1"})

	if !errors.Is(err, ErrDataDirLocked) {
		t.Errorf("New on a data dir in use: %v, want %v", err, ErrDataDirLocked)
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no node id", Config{DataDir: "/nonexistent", ListenAddress: "127.0.0.1"}},
		{"no data dir", Config{NodeID: "n", ListenAddress: "127.0.0.1"}},
		{"host name", Config{NodeID: "n", DataDir: "/nonexistent", ListenAddress: "localhost"}},
		{"port out of range", Config{NodeID: "n", DataDir: "/nonexistent", ListenAddress: "127.0.0.1", NBDPort: 65536}},
		{"negative ack timeout", Config{NodeID: "n", DataDir: "/nonexistent", ListenAddress: "127.0.0.1", AckTimeout: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New: %v, want %v", err, ErrInvalidConfig)
			}
		})
	}
}
