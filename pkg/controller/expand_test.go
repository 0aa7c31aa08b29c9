package controller_test

import (
	"errors"
	"testing"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// ExpandVolume grows every replica in the write path before the record
// takes the size, hands the primary the new layout, and is idempotent; a
// Faulted replica is grown when it resumes.
func TestExpandVolume(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	size := v.Size
	grown := 2 * size

	// c1's node stops: its replica is Faulted and misses the expansion.
	pass(t, e, "a1", "a2", "b1", "b2", "c2")
	if states(record(t, e, v.ID).Layout)["c1"] != replication.Faulted {
		t.Fatalf("c1 not Faulted: %v", states(record(t, e, v.ID).Layout))
	}
	before := record(t, e, v.ID)

	got, err := e.C.ExpandVolume(ctx, v.ID, grown)
	if err != nil {
		t.Fatalf("ExpandVolume: %v", err)
	}
	if got.Size != grown || got.Layout.Size != grown || got.Layout.Epoch != before.Layout.Epoch+1 {
		t.Fatalf("record after expansion: size %d, layout size %d, epoch %d; want %d, %d, %d",
			got.Size, got.Layout.Size, got.Layout.Epoch, grown, grown, before.Layout.Epoch+1)
	}
	for _, r := range got.Layout.Replicas {
		want := grown
		if r.State == replication.Faulted {
			want = size
		}
		if have := e.Nodes.ReplicaSize(controllertest.APIAddress(r.NodeID), v.ID); have != want {
			t.Errorf("%s replica (%s) holds %d bytes, want %d", r.NodeID, r.State, have, want)
		}
	}
	if l, ok := e.Nodes.Layout(controllertest.APIAddress(got.Layout.Primary), v.ID); !ok || l.Size != grown || l.Epoch != got.Layout.Epoch {
		t.Errorf("primary's layout: size %d epoch %d, want %d at %d", l.Size, l.Epoch, grown, got.Layout.Epoch)
	}

	again, err := e.C.ExpandVolume(ctx, v.ID, size)
	if err != nil || again.Size != grown || again.Layout.Epoch != got.Layout.Epoch {
		t.Errorf("ExpandVolume to a smaller size = %d at epoch %d, %v; want the volume as it is", again.Size, again.Layout.Epoch, err)
	}

	// c1 comes back: it is grown before it is resumed.
	pass(t, e, "a1", "a2", "b1", "b2", "c2", "c1")
	after := record(t, e, v.ID)
	if states(after.Layout)["c1"] != replication.Syncing {
		t.Fatalf("c1 is back but not resumed: %v", states(after.Layout))
	}
	if have := e.Nodes.ReplicaSize(controllertest.APIAddress("c1"), v.ID); have != grown {
		t.Errorf("c1 resumed holding %d bytes, want %d", have, grown)
	}
}

func TestExpandVolumeRefusals(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	if _, err := e.C.ExpandVolume(ctx, "vol-missing", 2*v.Size); !errors.Is(err, controller.ErrVolumeNotFound) {
		t.Errorf("ExpandVolume of a missing volume: %v, want ErrVolumeNotFound", err)
	}
	if _, err := e.C.ExpandVolume(ctx, v.ID, v.Size+1); !errors.Is(err, controller.ErrInvalid) {
		t.Errorf("ExpandVolume to an unaligned size: %v, want ErrInvalid", err)
	}
	if _, err := e.C.ExpandVolume(ctx, v.ID, 100*controllertest.GiB); !errors.Is(err, controller.ErrNoPlacement) {
		t.Errorf("ExpandVolume beyond the nodes' room: %v, want ErrNoPlacement", err)
	}
	// A replica node that does not answer fails the expansion, and the
	// record keeps its size.
	e.Nodes.SetDown(controllertest.APIAddress(v.Layout.Replicas[1].NodeID), true)
	if _, err := e.C.ExpandVolume(ctx, v.ID, 2*v.Size); !errors.Is(err, controller.ErrNodeUnavailable) {
		t.Errorf("ExpandVolume with a node down: %v, want ErrNodeUnavailable", err)
	}
	if got := record(t, e, v.ID); got.Size != v.Size {
		t.Errorf("record size %d after a failed expansion, want %d", got.Size, v.Size)
	}
	e.Nodes.SetDown(controllertest.APIAddress(v.Layout.Replicas[1].NodeID), false)
	if got, err := e.C.ExpandVolume(ctx, v.ID, 2*v.Size); err != nil || got.Size != 2*v.Size {
		t.Errorf("retried ExpandVolume = %d, %v; want %d", got.Size, err, 2*v.Size)
	}
}

// A Faulted replica whose node lost it is resumed all the same: the grow
// before the resume answers NotFound, and finding the replica missing is
// the primary's business, as before there was a grow.
func TestResumeOfAReplicaItsNodeLost(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	pass(t, e, "a1", "a2", "b1", "b2", "c2")
	if states(record(t, e, v.ID).Layout)["c1"] != replication.Faulted {
		t.Fatalf("c1 not Faulted: %v", states(record(t, e, v.ID).Layout))
	}
	e.Nodes.Drop(controllertest.APIAddress("c1"), v.ID)
	pass(t, e, "a1", "a2", "b1", "b2", "c2", "c1")
	if st := states(record(t, e, v.ID).Layout)["c1"]; st != replication.Syncing {
		t.Errorf("c1 came back without its replica and is %s, want Syncing", st)
	}
}
