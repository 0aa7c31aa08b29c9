package controller

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
	"github.com/trireme-csi/trireme/pkg/store/bolt"
)

// While CreateVolume provisions a volume, the repair loop leaves it alone,
// even with its primary's node dead: the create makes the replicas and
// hands out the layout, or rolls back.
func TestRepairLeavesAVolumeBeingCreatedAlone(t *testing.T) {
	c, st, now := newRepairController(t)
	ctx := context.Background()
	v := createTestVolume(t, st, "vol-1", "a", "b")
	*now = now.Add(time.Hour) // a never registered: past the grace, dead
	if err := c.RegisterNode(ctx, Registration{NodeID: "b", DataAddress: "b:1", APIAddress: "b:2", NBDAddress: "b:3"}); err != nil {
		t.Fatal(err)
	}

	c.creatingNow(v.ID)
	if err := c.repairVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetVolume(ctx, v.ID); got.Revision != v.Revision {
		t.Fatalf("a repair changed a volume being created: revision %d, was %d", got.Revision, v.Revision)
	}
	if c.creatingNow(v.ID) {
		t.Fatal("a second create of the same volume was let in")
	}
	c.created(v.ID)
	// Once the create is over, the same pass fails the volume over to b.
	if err := c.repairVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetVolume(ctx, v.ID); got.Layout.Primary != "b" {
		t.Fatalf("after the create, primary %s, want b", got.Layout.Primary)
	}
}

// newRepairController returns a controller over a new bolt store, whose
// nodes answer every call (okNode) and whose clock stands still until the
// test moves it.
func newRepairController(t *testing.T) (*Controller, store.Store, *time.Time) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(Options{Store: st, Now: func() time.Time { return now },
		DialNode: func(string, string) (apiv1.NodeClient, error) { return okNode{}, nil }})
	t.Cleanup(func() { c.Close() })
	return c, st, &now
}

// createTestVolume stores a 4 KiB volume whose first node is primary and
// every replica InSync.
func createTestVolume(t *testing.T, st store.Store, id string, nodes ...string) store.Volume {
	t.Helper()
	l := replication.Layout{VolumeID: id, Size: 4096, Epoch: 1, Primary: nodes[0]}
	for _, n := range nodes {
		l.Replicas = append(l.Replicas, replication.ReplicaInfo{NodeID: n, State: replication.InSync})
	}
	v, err := st.CreateVolume(context.Background(), store.Volume{ID: id, Name: "pvc-" + id, Size: 4096, Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// okNode answers the calls a repair and a delete make.
type okNode struct{ apiv1.NodeClient }

func (okNode) SetLayout(context.Context, *apiv1.SetLayoutRequest, ...grpc.CallOption) (*apiv1.SetLayoutResponse, error) {
	return &apiv1.SetLayoutResponse{}, nil
}

func (okNode) GetVolume(_ context.Context, req *apiv1.GetVolumeRequest, _ ...grpc.CallOption) (*apiv1.GetVolumeResponse, error) {
	return &apiv1.GetVolumeResponse{Volume: &apiv1.Volume{VolumeId: req.GetVolumeId(), Epoch: 1}}, nil
}

func (okNode) DeleteReplica(context.Context, *apiv1.DeleteReplicaRequest, ...grpc.CallOption) (*apiv1.DeleteReplicaResponse, error) {
	return &apiv1.DeleteReplicaResponse{}, nil
}

func (okNode) ListVolumes(context.Context, *apiv1.ListVolumesRequest, ...grpc.CallOption) (*apiv1.ListVolumesResponse, error) {
	return &apiv1.ListVolumesResponse{}, nil
}

// A volume waiting for an InSync replica to come back is logged once, not
// every pass; once it is failed over the condition is over, and logged
// again if it comes back.
func TestNoPrimaryConditionIsLoggedAgainOnlyAfterItEnded(t *testing.T) {
	c, st, now := newRepairController(t)
	ctx := context.Background()
	v := createTestVolume(t, st, "vol-1", "a", "b")
	*now = now.Add(time.Hour) // neither a nor b registered: both dead
	waiting := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.logged[replicaKey{"vol-1", "no-primary"}]
	}
	if err := c.repairVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if !waiting() {
		t.Fatal("a volume with no live InSync replica was not reported as waiting")
	}
	if err := c.RegisterNode(ctx, Registration{NodeID: "b", DataAddress: "b:1", APIAddress: "b:2", NBDAddress: "b:3"}); err != nil {
		t.Fatal(err)
	}
	if err := c.repairVolume(ctx, v); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetVolume(ctx, v.ID); got.Layout.Primary != "b" {
		t.Fatalf("primary %s, want b", got.Layout.Primary)
	}
	if waiting() {
		t.Fatal("the failover did not end the waiting condition: it would never be logged again")
	}
}
