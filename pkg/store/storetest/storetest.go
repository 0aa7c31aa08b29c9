// Package storetest is the contract test suite of package store. Every
// backend runs it from its own tests:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, newStore, storetest.WithReopen(reopen))
//	}
//
// The suite asserts exact values, and checks the concurrency guarantees by
// racing goroutines against one store.
package storetest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// Option configures Run.
type Option func(*suite)

// WithReopen gives the suite a way to restart the backend: reopen closes s
// and returns a new Store over the same data, as a restarted controller
// would get. Without it the persistence tests are skipped.
func WithReopen(reopen func(t *testing.T, s store.Store) store.Store) Option {
	return func(su *suite) { su.reopen = reopen }
}

type suite struct {
	newStore func(t *testing.T) store.Store
	reopen   func(t *testing.T, s store.Store) store.Store
}

// Run runs the contract tests as subtests of t. newStore returns an empty
// store for one subtest, and registers its cleanup with t.
func Run(t *testing.T, newStore func(t *testing.T) store.Store, opts ...Option) {
	su := &suite{newStore: newStore}
	for _, o := range opts {
		o(su)
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"CreateAndGet", su.testCreateAndGet},
		{"CreateErrors", su.testCreateErrors},
		{"CopiesInAndOut", su.testCopiesInAndOut},
		{"EmptyCollectionsReadNil", su.testEmptyCollections},
		{"NamesRoundTrip", su.testNamesRoundTrip},
		{"ListPagination", su.testListPagination},
		{"ListByteOrder", su.testListByteOrder},
		{"Update", su.testUpdate},
		{"Delete", su.testDelete},
		{"CanceledContext", su.testCanceledContext},
		{"ConcurrentCreateOneName", su.testConcurrentCreateOneName},
		{"ConcurrentCreateOneID", su.testConcurrentCreateOneID},
		{"ConcurrentUpdateCounts", su.testConcurrentUpdateCounts},
		{"Mutate", su.testMutate},
		{"BumpEpoch", su.testBumpEpoch},
		{"ConcurrentBumpEpoch", su.testConcurrentBumpEpoch},
		{"Nodes", su.testNodes},
		{"ListNodes", su.testListNodes},
		{"DeleteNode", su.testDeleteNode},
		{"ConcurrentPutNode", su.testConcurrentPutNode},
		{"Persistence", su.testPersistence},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.run)
	}
}

// created is the creation time of every test volume: microsecond
// precision, the finest every backend keeps.
var created = time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)

const gib = 1 << 30

// newVolume returns a valid volume with every field set.
func newVolume(id, name string) store.Volume {
	return store.Volume{
		ID:          id,
		Name:        name,
		Size:        gib,
		Parameters:  map[string]string{"replicas": "3", "minInSync": "2"},
		Fingerprint: "sha256:0f1e2d",
		Layout: replication.Layout{
			VolumeID: id, Size: gib, Epoch: 1, Primary: "node-a",
			Replicas: []replication.ReplicaInfo{
				{NodeID: "node-a", Zone: "zone-a", Address: "10.0.0.1:7000", State: replication.InSync},
				{NodeID: "node-b", Zone: "zone-b", Address: "10.0.0.2:7000", State: replication.Syncing},
				{NodeID: "node-c", Zone: "zone-c", Address: "10.0.0.3:7000", State: replication.Faulted},
			},
		},
		Attachment:        store.Attachment{NodeID: "node-x", Generation: 4},
		MinInSyncReplicas: 2,
		Created:           created,
	}
}

// withRevision returns v as the store should hold it at revision rev.
func withRevision(v store.Volume, rev uint64) store.Volume {
	v.Revision = rev
	return v
}

func mustCreate(t *testing.T, s store.Store, v store.Volume) store.Volume {
	t.Helper()
	got, err := s.CreateVolume(t.Context(), v)
	if err != nil {
		t.Fatalf("CreateVolume(%s): %v", v.ID, err)
	}
	return got
}

func mustGet(t *testing.T, s store.Store, id string) store.Volume {
	t.Helper()
	got, err := s.GetVolume(t.Context(), id)
	if err != nil {
		t.Fatalf("GetVolume(%s): %v", id, err)
	}
	return got
}

// wantEqual fails the test unless got and want are deeply equal.
func wantEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

// wantErr fails the test unless errors.Is(err, want); a nil want asks
// for no error.
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func ids(vols []store.Volume) []string {
	out := []string{}
	for _, v := range vols {
		out = append(out, v.ID)
	}
	return out
}
