package kube

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

func TestObjectName(t *testing.T) {
	hashed := func(s string) bool { return strings.HasPrefix(s, hashedPrefix) && len(s) == len(hashedPrefix)+64 }
	tests := []struct {
		key    string
		itself bool
	}{
		{"vol-0f1e2d3c4b5a69788796a5b4c3d2e1f0", true},
		{"node-a.zone-b", true},
		{"pvc-0b1c", true},
		{"Node-z", false},
		{"vol_a", false},
		{"h.0123", false}, // would look hashed
		{"ünïcødé", false},
		{"with\x00nul", false},
		{strings.Repeat("x", 254), false},
	}
	seen := map[string]string{}
	for _, tc := range tests {
		got := objectName(tc.key)
		if tc.itself && got != tc.key || !tc.itself && !hashed(got) {
			t.Errorf("objectName(%q) = %q, want itself %v", tc.key, got, tc.itself)
		}
		if other, ok := seen[got]; ok {
			t.Errorf("objectName(%q) = objectName(%q) = %q", tc.key, other, got)
		}
		seen[got] = tc.key
	}
}

func TestSummary(t *testing.T) {
	rep := func(node, zone string, st replication.ReplicaState) replication.ReplicaInfo {
		return replication.ReplicaInfo{NodeID: node, Zone: zone, State: st}
	}
	tests := []struct {
		name      string
		replicas  []replication.ReplicaInfo
		minInSync int
		want      volumeStatus
	}{
		{"all in sync", []replication.ReplicaInfo{rep("n1", "a", replication.InSync), rep("n2", "b", replication.InSync)}, 2,
			volumeStatus{Size: "3Gi", Replicas: 2, InSync: 2, Zones: "a,b", Health: HealthHealthy, Sync: "complete"}},
		{"one syncing", []replication.ReplicaInfo{rep("n1", "a", replication.InSync), rep("n2", "a", replication.InSync),
			rep("n3", "c", replication.Syncing)}, 2,
			volumeStatus{Size: "3Gi", Replicas: 3, InSync: 2, Zones: "a,c", Health: HealthDegraded, Sync: "n3=Syncing"}},
		{"below minimum", []replication.ReplicaInfo{rep("n1", "a", replication.InSync), rep("n2", "b", replication.Faulted)}, 2,
			volumeStatus{Size: "3Gi", Replicas: 2, InSync: 1, Zones: "a,b", Health: HealthBlocked, Sync: "n2=Faulted"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := store.Volume{Size: 3 << 30, MinInSyncReplicas: tc.minInSync, Layout: replication.Layout{Replicas: tc.replicas}}
			if got := summarize(v); got != tc.want {
				t.Errorf("summarize:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func testVolume(id, name string) store.Volume {
	return store.Volume{ID: id, Name: name, Size: 1 << 30,
		Layout:  replication.Layout{VolumeID: id, Size: 1 << 30, Epoch: 1},
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

var errLost = errors.New("connection lost")

// failOn fails the first op on a resource, before or after it acts.
func failOn(m *memory, op string, gvr schema.GroupVersionResource, after bool) {
	done := false
	m.fail = func(o string, g schema.GroupVersionResource, _ string) (error, error) {
		if done || o != op || g != gvr {
			return nil, nil
		}
		done = true
		if after {
			return nil, errLost
		}
		return errLost, nil
	}
}

// TestCreateCrashBeforeVolume: a create that claimed the name but did not
// store the volume leaves nothing a read sees, and the name free.
func TestCreateCrashBeforeVolume(t *testing.T) {
	m := newMemory()
	s := &Store{res: m}
	failOn(m, "create", VolumeResource, false)
	if _, err := s.CreateVolume(t.Context(), testVolume("vol-1", "pvc-1")); !errors.Is(err, errLost) {
		t.Fatalf("CreateVolume: error %v, want %v", err, errLost)
	}
	if _, err := s.GetVolumeByName(t.Context(), "pvc-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetVolumeByName of the half-made volume: error %v, want %v", err, store.ErrNotFound)
	}
	if page, err := s.ListVolumes(t.Context(), store.ListOptions{}); err != nil || len(page.Volumes) != 0 {
		t.Errorf("ListVolumes = %v, %v; want no volume", page.Volumes, err)
	}
	if _, err := s.CreateVolume(t.Context(), testVolume("vol-2", "pvc-1")); err != nil {
		t.Errorf("CreateVolume of the name again: %v", err)
	}
	if got := objectNames(t, m, VolumeResource); !slices.Equal(got, []string{"vol-2"}) {
		t.Errorf("TriremeVolumes %v, want [vol-2]", got)
	}
}

// TestCreateAnswerLost: a volume stored whose answer was lost is found by
// name on a retry; so is one whose claim's answer was lost.
func TestCreateAnswerLost(t *testing.T) {
	for _, gvr := range []schema.GroupVersionResource{NameResource, VolumeResource} {
		t.Run(gvr.Resource, func(t *testing.T) {
			m := newMemory()
			s := &Store{res: m}
			failOn(m, "create", gvr, true)
			_, err := s.CreateVolume(t.Context(), testVolume("vol-1", "pvc-1"))
			if !errors.Is(err, errLost) {
				t.Fatalf("CreateVolume: error %v, want %v", err, errLost)
			}
			got, err := s.GetVolumeByName(t.Context(), "pvc-1")
			if gvr == NameResource {
				// The claim was made, the volume never stored: a retry
				// with a new id takes the claim over.
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("GetVolumeByName: %v, want %v", err, store.ErrNotFound)
				}
				if got, err = s.CreateVolume(t.Context(), testVolume("vol-2", "pvc-1")); err != nil || got.ID != "vol-2" {
					t.Fatalf("CreateVolume again = %s, %v; want vol-2", got.ID, err)
				}
				return
			}
			if err != nil || got.ID != "vol-1" || got.Revision != 1 {
				t.Errorf("GetVolumeByName = %s at %d, %v; want vol-1 at 1", got.ID, got.Revision, err)
			}
		})
	}
}

// TestCreateLosesTheClaimMidway: a create whose claim is taken over
// before its volume is stored (the claim named a missing volume then)
// deletes its volume and reports ErrExists; the name belongs to the other.
func TestCreateLosesTheClaimMidway(t *testing.T) {
	m := newMemory()
	s := &Store{res: m}
	nested := false
	m.fail = func(op string, gvr schema.GroupVersionResource, name string) (error, error) {
		if op == "create" && gvr == VolumeResource && name == "vol-1" && !nested {
			nested = true
			if _, err := s.CreateVolume(t.Context(), testVolume("vol-2", "pvc-1")); err != nil {
				t.Errorf("concurrent CreateVolume: %v", err)
			}
		}
		return nil, nil
	}
	if _, err := s.CreateVolume(t.Context(), testVolume("vol-1", "pvc-1")); !errors.Is(err, store.ErrExists) {
		t.Fatalf("CreateVolume that lost its claim: error %v, want %v", err, store.ErrExists)
	}
	if got, err := s.GetVolumeByName(t.Context(), "pvc-1"); err != nil || got.ID != "vol-2" {
		t.Errorf("GetVolumeByName = %s, %v; want vol-2", got.ID, err)
	}
	if got := objectNames(t, m, VolumeResource); !slices.Equal(got, []string{"vol-2"}) {
		t.Errorf("TriremeVolumes %v, want [vol-2]", got)
	}
}

// TestCollectGarbage: a volume no claim names and a claim whose volume is
// missing are deleted once old enough; live volumes are kept.
func TestCollectGarbage(t *testing.T) {
	m := newMemory()
	s := &Store{res: m}
	ctx := t.Context()
	for _, v := range []store.Volume{testVolume("vol-live", "pvc-live"), testVolume("vol-lost", "pvc-lost")} {
		if _, err := s.CreateVolume(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	// vol-lost's claim points elsewhere, as a crash after a takeover
	// leaves it; pvc-half's claim names a volume never stored.
	claim, _ := m.get(ctx, NameResource, "pvc-lost")
	unstructured.SetNestedField(claim.Object, "vol-gone", "spec", "volumeID")
	if _, err := m.update(ctx, NameResource, claim); err != nil {
		t.Fatal(err)
	}
	failOn(m, "create", VolumeResource, false)
	if _, err := s.CreateVolume(ctx, testVolume("vol-half", "pvc-half")); !errors.Is(err, errLost) {
		t.Fatalf("CreateVolume: %v, want %v", err, errLost)
	}

	if n, err := s.CollectGarbage(ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("CollectGarbage of young objects = %d, %v; want 0", n, err)
	}
	if n, err := s.CollectGarbage(ctx, 0); err != nil || n != 3 {
		t.Errorf("CollectGarbage = %d, %v; want 3", n, err)
	}
	if got := objectNames(t, m, VolumeResource); !slices.Equal(got, []string{"vol-live"}) {
		t.Errorf("TriremeVolumes %v, want [vol-live]", got)
	}
	if got := objectNames(t, m, NameResource); !slices.Equal(got, []string{"pvc-live"}) {
		t.Errorf("claims %v, want [pvc-live]", got)
	}
	if _, err := s.GetVolume(ctx, "vol-live"); err != nil {
		t.Errorf("GetVolume of the live volume: %v", err)
	}
}

func objectNames(t *testing.T, m *memory, gvr schema.GroupVersionResource) []string {
	t.Helper()
	objs, err := m.list(t.Context(), gvr, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.GetName())
	}
	return names
}

// TestDeleteCrashBeforeReleasingName: a delete that removed the volume but
// not the claim frees the name all the same.
func TestDeleteCrashBeforeReleasingName(t *testing.T) {
	m := newMemory()
	s := &Store{res: m}
	v, err := s.CreateVolume(t.Context(), testVolume("vol-1", "pvc-1"))
	if err != nil {
		t.Fatal(err)
	}
	failOn(m, "delete", NameResource, false)
	if err := s.DeleteVolume(t.Context(), v.ID, v.Revision); err != nil {
		t.Fatalf("DeleteVolume: %v", err)
	}
	if _, err := m.get(t.Context(), NameResource, "pvc-1"); err != nil {
		t.Fatalf("the claim should be left over: %v", err)
	}
	if _, err := s.GetVolumeByName(t.Context(), "pvc-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetVolumeByName: error %v, want %v", err, store.ErrNotFound)
	}
	if _, err := s.CreateVolume(t.Context(), testVolume("vol-2", "pvc-1")); err != nil {
		t.Fatalf("CreateVolume taking over the claim: %v", err)
	}
	got, err := s.GetVolumeByName(t.Context(), "pvc-1")
	if err != nil || got.ID != "vol-2" {
		t.Errorf("GetVolumeByName = %s, %v; want vol-2", got.ID, err)
	}
}

// TestUpdateRetriesForeignWrites: a write to the object that leaves the
// store revision alone (an operator's label, say) does not fail a
// compare-and-swap based on that revision.
func TestUpdateRetriesForeignWrites(t *testing.T) {
	m := newMemory()
	s := &Store{res: m}
	v, err := s.CreateVolume(t.Context(), testVolume("vol-1", "pvc-1"))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := m.get(t.Context(), VolumeResource, "vol-1")
	u.SetLabels(map[string]string{"team": "a"})
	if _, err := m.update(t.Context(), VolumeResource, u); err != nil {
		t.Fatal(err)
	}
	v.Attachment.Attach("n1")
	got, err := s.UpdateVolume(t.Context(), v)
	if err != nil || got.Revision != 2 || got.Attachment.NodeID != "n1" {
		t.Errorf("UpdateVolume = rev %d attached %q, %v; want rev 2 attached n1", got.Revision, got.Attachment.NodeID, err)
	}
}

func TestStoreErrors(t *testing.T) {
	gr := VolumeResource.GroupResource()
	tests := []struct {
		err  error
		want error
	}{
		{apierrors.NewNotFound(gr, "x"), store.ErrNotFound},
		{apierrors.NewAlreadyExists(gr, "x"), store.ErrExists},
		{apierrors.NewConflict(gr, "x", nil), store.ErrConflict},
		{apierrors.NewInvalid(schema.GroupKind{Group: Group, Kind: VolumeKind}, "x", nil), store.ErrInvalid},
	}
	for _, tc := range tests {
		if got := storeErr(tc.err); !errors.Is(got, tc.want) {
			t.Errorf("storeErr(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestClosedStoreFails(t *testing.T) {
	s := &Store{res: newMemory()}
	s.Close()
	if _, err := s.GetVolume(t.Context(), "vol-1"); !errors.Is(err, ErrClosed) {
		t.Errorf("GetVolume after Close: error %v, want %v", err, ErrClosed)
	}
}

// TestCollectGarbageRereadsTheClaim: a volume made and claimed after the
// collector listed the claims (here, the claim is made between the two
// lists) is not deleted, however old its creation time looks.
func TestCollectGarbageRereadsTheClaim(t *testing.T) {
	m := newMemory()
	s := &Store{res: m}
	ctx := t.Context()
	listed := false
	// A volume whose claim is missing from the first list: create it
	// whole, then hide its claim from the collector's claim list once.
	if _, err := s.CreateVolume(ctx, testVolume("vol-new", "pvc-new")); err != nil {
		t.Fatal(err)
	}
	s.res = &hideClaimsOnce{memory: m, hidden: &listed}
	if n, err := s.CollectGarbage(ctx, 0); err != nil || n != 0 {
		t.Fatalf("CollectGarbage = %d, %v; want nothing deleted", n, err)
	}
	if !listed {
		t.Fatal("the collector did not list the claims")
	}
	if _, err := s.GetVolume(ctx, "vol-new"); err != nil {
		t.Errorf("GetVolume after the collection: %v", err)
	}
}

// hideClaimsOnce answers the first list of claims with none, as a list
// made before a create claimed its name would.
type hideClaimsOnce struct {
	*memory
	hidden *bool
}

func (h *hideClaimsOnce) list(ctx context.Context, gvr schema.GroupVersionResource, limit int64) ([]unstructured.Unstructured, error) {
	if gvr == NameResource && !*h.hidden {
		*h.hidden = true
		return nil, nil
	}
	return h.memory.list(ctx, gvr, limit)
}
