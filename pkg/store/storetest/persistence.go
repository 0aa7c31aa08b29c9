package storetest

import (
	"testing"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// testPersistence writes, reopens the store, and finds every record as it
// was, with compare-and-swap and the name index carrying on.
func (su *suite) testPersistence(t *testing.T) {
	if su.reopen == nil {
		t.Skip("backend has no Reopen hook")
	}
	s := su.newStore(t)
	before := su.populate(t, s)

	s = su.reopen(t, s)
	after := snapshot(t, s)
	wantEqual(t, "records after reopen", after, before)

	_, err := s.CreateVolume(t.Context(), newVolume("vol-0009", "pvc-1"))
	wantErr(t, "CreateVolume with a name taken before reopen", err, store.ErrExists)
	mustCreate(t, s, newVolume("vol-0010", "pvc-2"))
	byName, err := s.GetVolumeByName(t.Context(), "pvc-3")
	wantErr(t, "GetVolumeByName after reopen", err, nil)
	wantEqual(t, "GetVolumeByName after reopen", byName, withRevision(newVolume("vol-0003", "pvc-3"), 1))
	_, err = s.UpdateVolume(t.Context(), withRevision(mustGet(t, s, "vol-0001"), 1))
	wantErr(t, "UpdateVolume at a revision stale before reopen", err, store.ErrConflict)
	got, err := store.BumpEpoch(t.Context(), s, "vol-0001", func(*store.Volume) error { return nil })
	wantErr(t, "BumpEpoch after reopen", err, nil)
	wantEqual(t, "epoch after reopen", got.Layout.Epoch, uint64(3))
	wantEqual(t, "revision after reopen", got.Revision, uint64(3))
}

// populate creates, updates and deletes volumes and nodes, and returns
// what the store should then hold.
func (su *suite) populate(t *testing.T, s store.Store) records {
	for _, v := range []store.Volume{
		newVolume("vol-0001", "pvc-1"), newVolume("vol-0002", "pvc-2"), newVolume("vol-0003", "pvc-3"),
	} {
		mustCreate(t, s, v)
	}
	_, err := store.BumpEpoch(t.Context(), s, "vol-0001", func(v *store.Volume) error {
		v.Layout.Replicas[1].State = replication.InSync
		return nil
	})
	wantErr(t, "BumpEpoch", err, nil)
	wantErr(t, "DeleteVolume", s.DeleteVolume(t.Context(), "vol-0002", 1), nil)
	mustPutNode(t, s, newNode("node-a"))
	mustPutNode(t, s, newNode("node-b"))
	mustPutNode(t, s, withNodeRevision(newNode("node-b"), 1))
	wantErr(t, "DeleteNode", s.DeleteNode(t.Context(), "node-a", 1), nil)

	want := snapshot(t, s)
	v1 := withRevision(newVolume("vol-0001", "pvc-1"), 2)
	v1.Layout.Epoch = 2
	v1.Layout.Replicas[1].State = replication.InSync
	wantEqual(t, "records before reopen", want, records{
		Volumes: []store.Volume{v1, withRevision(newVolume("vol-0003", "pvc-3"), 1)},
		Nodes:   []store.Node{withNodeRevision(newNode("node-b"), 2)},
	})
	return want
}

// records is everything a store holds.
type records struct {
	Volumes []store.Volume
	Nodes   []store.Node
}

func snapshot(t *testing.T, s store.Store) records {
	t.Helper()
	page, err := s.ListVolumes(t.Context(), store.ListOptions{})
	if err != nil {
		t.Fatalf("ListVolumes: %v", err)
	}
	nodes, err := s.ListNodes(t.Context())
	if err != nil {
		t.Fatalf("ListNodes: %v", err)
	}
	return records{Volumes: page.Volumes, Nodes: nodes}
}
