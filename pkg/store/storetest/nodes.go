package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/store"
)

var heartbeat = time.Date(2026, 3, 4, 5, 6, 8, 250000000, time.UTC)

// newNode returns a valid node with every field set.
func newNode(id string) store.Node {
	return store.Node{
		ID:   id,
		Zone: "zone-a",
		Topology: map[string]string{
			"topology.kubernetes.io/zone": "zone-a",
			"trireme.io/node":             id,
		},
		DataAddress:   "10.0.0.1:7000",
		APIAddress:    "10.0.0.1:7001",
		CapacityBytes: 100 * gib,
		LastHeartbeat: heartbeat,
	}
}

func withNodeRevision(n store.Node, rev uint64) store.Node {
	n.Revision = rev
	return n
}

func mustPutNode(t *testing.T, s store.Store, n store.Node) store.Node {
	t.Helper()
	got, err := s.PutNode(t.Context(), n)
	if err != nil {
		t.Fatalf("PutNode(%s): %v", n.ID, err)
	}
	return got
}

// testNodes runs PutNode steps against one store, each checked against
// the node stored after it.
func (su *suite) testNodes(t *testing.T) {
	s := su.newStore(t)
	first, beat := newNode("node-a"), newNode("node-a")
	beat.LastHeartbeat = heartbeat.Add(time.Second)
	east := newNode("node-a")
	east.LastHeartbeat = heartbeat.In(time.FixedZone("east", 3600))
	broken := store.Node{ID: "node-a", CapacityBytes: -1}
	at := withNodeRevision
	steps := []struct {
		name   string
		put    store.Node
		want   error
		stored store.Node // after the step
	}{
		{"create", first, nil, at(first, 1)},
		{"create again", first, store.ErrExists, at(first, 1)},
		{"heartbeat", at(beat, 1), nil, at(beat, 2)},
		{"stale revision", at(first, 1), store.ErrConflict, at(beat, 2)},
		{"future revision", at(first, 3), store.ErrConflict, at(beat, 2)},
		{"time in another zone", at(east, 2), nil, at(first, 3)},
		{"negative capacity", at(broken, 3), store.ErrInvalid, at(first, 3)},
	}
	for _, st := range steps {
		got, err := s.PutNode(t.Context(), st.put)
		wantErr(t, st.name, err, st.want)
		if err == nil {
			wantEqual(t, st.name+": PutNode result", got, st.stored)
		}
		stored, err := s.GetNode(t.Context(), "node-a")
		wantErr(t, st.name+": GetNode", err, nil)
		wantEqual(t, st.name+": GetNode", stored, st.stored)
	}
	checkNodeErrors(t, s)
}

func checkNodeErrors(t *testing.T, s store.Store) {
	_, err := s.PutNode(t.Context(), withNodeRevision(newNode("node-missing"), 1))
	wantErr(t, "PutNode of a missing node at revision 1", err, store.ErrNotFound)
	_, err = s.GetNode(t.Context(), "node-missing")
	wantErr(t, "GetNode of a missing node", err, store.ErrNotFound)
	_, err = s.PutNode(t.Context(), store.Node{})
	wantErr(t, "PutNode without id", err, store.ErrInvalid)
	_, err = s.PutNode(t.Context(), newNode(string(make([]byte, store.MaxNodeIDLen+1))))
	wantErr(t, "PutNode with a long id", err, store.ErrInvalid)
}

func (su *suite) testListNodes(t *testing.T) {
	s := su.newStore(t)
	nodes, err := s.ListNodes(t.Context())
	wantErr(t, "ListNodes of an empty store", err, nil)
	wantEqual(t, "node count", len(nodes), 0)

	for _, id := range []string{"node-b", "node-a", "node-c", "Node-z", "node-a1"} {
		mustPutNode(t, s, newNode(id))
	}
	nodes, err = s.ListNodes(t.Context())
	wantErr(t, "ListNodes", err, nil)
	var want []store.Node
	for _, id := range []string{"Node-z", "node-a", "node-a1", "node-b", "node-c"} {
		want = append(want, withNodeRevision(newNode(id), 1))
	}
	wantEqual(t, "nodes", nodes, want)
}

func (su *suite) testDeleteNode(t *testing.T) {
	s := su.newStore(t)
	mustPutNode(t, s, newNode("node-a"))
	mustPutNode(t, s, withNodeRevision(newNode("node-a"), 1))
	steps := []struct {
		name     string
		id       string
		revision uint64
		want     error
	}{
		{"stale revision", "node-a", 1, store.ErrConflict},
		{"missing node", "node-b", 2, store.ErrNotFound},
		{"current revision", "node-a", 2, nil},
		{"deleted node", "node-a", 2, store.ErrNotFound},
	}
	for _, st := range steps {
		wantErr(t, st.name, s.DeleteNode(t.Context(), st.id, st.revision), st.want)
	}
	_, err := s.GetNode(t.Context(), "node-a")
	wantErr(t, "GetNode after delete", err, store.ErrNotFound)
	wantEqual(t, "node created again", mustPutNode(t, s, newNode("node-a")), withNodeRevision(newNode("node-a"), 1))
}

// testConcurrentPutNode has workers add to a node's capacity with
// read-modify-write loops on PutNode: no addition is lost.
func (su *suite) testConcurrentPutNode(t *testing.T) {
	s := su.newStore(t)
	n := newNode("node-a")
	n.CapacityBytes = 0
	mustPutNode(t, s, n)
	const workers, each = 8, 10
	errs := race(workers, func(int) error {
		for range each {
			if err := addCapacity(t, s, "node-a"); err != nil {
				return err
			}
		}
		return nil
	})
	for i, err := range errs {
		wantErr(t, fmt.Sprintf("worker %d", i), err, nil)
	}
	got, err := s.GetNode(t.Context(), "node-a")
	wantErr(t, "GetNode", err, nil)
	wantEqual(t, "capacity", got.CapacityBytes, int64(workers*each))
	wantEqual(t, "revision", got.Revision, uint64(1+workers*each))
}

func addCapacity(t *testing.T, s store.Store, id string) error {
	for {
		n, err := s.GetNode(t.Context(), id)
		if err != nil {
			return err
		}
		n.CapacityBytes++
		_, err = s.PutNode(t.Context(), n)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}
