package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

func (su *suite) testCreateAndGet(t *testing.T) {
	s := su.newStore(t)
	v := newVolume("vol-0001", "pvc-1")
	want := withRevision(v, 1)

	got := mustCreate(t, s, v)
	wantEqual(t, "CreateVolume result", got, want)
	wantEqual(t, "GetVolume", mustGet(t, s, "vol-0001"), want)
	byName, err := s.GetVolumeByName(t.Context(), "pvc-1")
	wantErr(t, "GetVolumeByName", err, nil)
	wantEqual(t, "GetVolumeByName", byName, want)

	_, err = s.GetVolume(t.Context(), "vol-0002")
	wantErr(t, "GetVolume of a missing id", err, store.ErrNotFound)
	_, err = s.GetVolumeByName(t.Context(), "pvc-2")
	wantErr(t, "GetVolumeByName of a missing name", err, store.ErrNotFound)
}

func (su *suite) testCreateErrors(t *testing.T) {
	s := su.newStore(t)
	taken := mustCreate(t, s, newVolume("vol-taken", "taken"))
	tests := []struct {
		name string
		edit func(v *store.Volume)
		want error
	}{
		{"id taken", func(v *store.Volume) { setID(v, "vol-taken") }, store.ErrExists},
		{"name taken", func(v *store.Volume) { v.Name = "taken" }, store.ErrExists},
		{"revision set", func(v *store.Volume) { v.Revision = 1 }, store.ErrInvalid},
		{"empty id", func(v *store.Volume) { setID(v, "") }, store.ErrInvalid},
		{"id with slash", func(v *store.Volume) { setID(v, "vol/x") }, store.ErrInvalid},
		{"empty name", func(v *store.Volume) { v.Name = "" }, store.ErrInvalid},
		{"name of 129 bytes", func(v *store.Volume) { v.Name = strings.Repeat("n", 129) }, store.ErrInvalid},
		{"name not UTF-8", func(v *store.Volume) { v.Name = "bad\xff" }, store.ErrInvalid},
		{"parameter not UTF-8", func(v *store.Volume) { v.Parameters["k"] = "\xc3" }, store.ErrInvalid},
		{"zero size", func(v *store.Volume) { v.Size, v.Layout.Size = 0, 0 }, store.ErrInvalid},
		{"layout size differs", func(v *store.Volume) { v.Layout.Size = 2 * gib }, store.ErrInvalid},
		{"layout of another volume", func(v *store.Volume) { v.Layout.VolumeID = "vol-taken" }, store.ErrInvalid},
		{"negative minInSync", func(v *store.Volume) { v.MinInSyncReplicas = -1 }, store.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume("vol-new", "new")
			tc.edit(&v)
			_, err := s.CreateVolume(t.Context(), v)
			wantErr(t, "CreateVolume", err, tc.want)
			checkOnly(t, s, taken)
		})
	}
}

// setID gives v another id, in the layout too.
func setID(v *store.Volume, id string) {
	v.ID, v.Layout.VolumeID = id, id
}

// checkOnly fails the test unless v is the only volume in s.
func checkOnly(t *testing.T, s store.Store, v store.Volume) {
	t.Helper()
	page, err := s.ListVolumes(t.Context(), store.ListOptions{})
	wantErr(t, "ListVolumes", err, nil)
	wantEqual(t, "volumes", page.Volumes, []store.Volume{v})
	_, err = s.GetVolumeByName(t.Context(), "new")
	wantErr(t, "GetVolumeByName(new)", err, store.ErrNotFound)
}

func (su *suite) testCopiesInAndOut(t *testing.T) {
	s := su.newStore(t)
	v := newVolume("vol-0001", "pvc-1")
	mustCreate(t, s, v)
	v.Parameters["replicas"] = "5"
	v.Layout.Replicas[0].State = replication.Faulted

	got := mustGet(t, s, "vol-0001")
	got.Parameters["replicas"] = "7"
	got.Layout.Replicas[1].State = replication.Faulted

	wantEqual(t, "GetVolume after changing the values passed and got", mustGet(t, s, "vol-0001"),
		withRevision(newVolume("vol-0001", "pvc-1"), 1))
}

func (su *suite) testEmptyCollections(t *testing.T) {
	s := su.newStore(t)
	v := newVolume("vol-0001", "pvc-1")
	v.Parameters = map[string]string{}
	v.Layout.Replicas = []replication.ReplicaInfo{}
	v.Layout.Primary = ""

	want := withRevision(v, 1)
	want.Parameters, want.Layout.Replicas = nil, nil
	wantEqual(t, "CreateVolume result", mustCreate(t, s, v), want)
	wantEqual(t, "GetVolume", mustGet(t, s, "vol-0001"), want)
}

// testNamesRoundTrip stores names of any bytes that CSI allows, and reads
// each back exactly, by id and by name.
func (su *suite) testNamesRoundTrip(t *testing.T) {
	s := su.newStore(t)
	names := []string{
		"pvc-0b1c",
		"ünïcødé-名前-🚀",
		"a/b/../c//",
		"with\x00nul",
		"with",
		"Name",
		"name",
		"caf\u00e9",  // é precomposed
		"cafe\u0301", // e and a combining accent: another name
		" \t\n\r\"'\\%*?<>|:;{}",
		strings.Repeat("x", 128),
		strings.Repeat("名", 42) + "xy", // 128 bytes
		"\x01\x7f",
	}
	for i, name := range names {
		mustCreate(t, s, newVolume(fmt.Sprintf("vol-%03d", i), name))
	}
	for i, name := range names {
		id := fmt.Sprintf("vol-%03d", i)
		got, err := s.GetVolumeByName(t.Context(), name)
		wantErr(t, fmt.Sprintf("GetVolumeByName(%q)", name), err, nil)
		wantEqual(t, fmt.Sprintf("GetVolumeByName(%q) id", name), got.ID, id)
		wantEqual(t, fmt.Sprintf("GetVolume(%s) name", id), mustGet(t, s, id).Name, name)
	}
	_, err := s.GetVolumeByName(t.Context(), "with\x00")
	wantErr(t, "GetVolumeByName of a prefix", err, store.ErrNotFound)
}

// testListPagination pages through 25 volumes, created out of order.
func (su *suite) testListPagination(t *testing.T) {
	s := su.newStore(t)
	for i := range 25 {
		n := i * 7 % 25
		mustCreate(t, s, newVolume(fmt.Sprintf("vol-%03d", n), fmt.Sprintf("pvc-%d", n)))
	}
	tests := []struct {
		name     string
		opts     store.ListOptions
		from, to int // ids vol-<from> through vol-<to>; from > to for none
		next     string
	}{
		{"all", store.ListOptions{}, 0, 24, ""},
		{"first page", store.ListOptions{Limit: 10}, 0, 9, "vol-009"},
		{"middle page", store.ListOptions{StartAfter: "vol-009", Limit: 10}, 10, 19, "vol-019"},
		{"short last page", store.ListOptions{StartAfter: "vol-019", Limit: 10}, 20, 24, ""},
		{"exact last page", store.ListOptions{StartAfter: "vol-019", Limit: 5}, 20, 24, ""},
		{"one before the end", store.ListOptions{StartAfter: "vol-018", Limit: 5}, 19, 23, "vol-023"},
		{"rest without limit", store.ListOptions{StartAfter: "vol-020"}, 21, 24, ""},
		{"token between ids", store.ListOptions{StartAfter: "vol-004x", Limit: 3}, 5, 7, "vol-007"},
		{"token before every id", store.ListOptions{StartAfter: "a", Limit: 1}, 0, 0, "vol-000"},
		{"token after every id", store.ListOptions{StartAfter: "vol-024"}, 1, 0, ""},
		{"limit of one", store.ListOptions{StartAfter: "vol-023", Limit: 1}, 24, 24, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			page, err := s.ListVolumes(t.Context(), tc.opts)
			wantErr(t, "ListVolumes", err, nil)
			wantEqual(t, "ids", ids(page.Volumes), idRange(tc.from, tc.to))
			wantEqual(t, "next", page.Next, tc.next)
		})
	}
	_, err := s.ListVolumes(t.Context(), store.ListOptions{Limit: -1})
	wantErr(t, "ListVolumes with a negative limit", err, store.ErrInvalid)
	checkWalk(t, s, 25)
}

// checkWalk pages through every volume of s, 7 at a time, deleting the
// last volume of each page before asking for the next: every volume is
// listed once, in order.
func checkWalk(t *testing.T, s store.Store, n int) {
	var got []string
	opts := store.ListOptions{Limit: 7}
	for range n {
		page, err := s.ListVolumes(t.Context(), opts)
		if err != nil {
			t.Fatalf("ListVolumes(%+v): %v", opts, err)
		}
		got = append(got, ids(page.Volumes)...)
		if page.Next == "" {
			break
		}
		last := page.Volumes[len(page.Volumes)-1]
		wantErr(t, "DeleteVolume", s.DeleteVolume(t.Context(), last.ID, last.Revision), nil)
		opts.StartAfter = page.Next
	}
	wantEqual(t, "ids of a walk in pages of 7", got, idRange(0, n-1))
}

func idRange(from, to int) []string {
	out := []string{}
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("vol-%03d", i))
	}
	return out
}

func (su *suite) testListByteOrder(t *testing.T) {
	s := su.newStore(t)
	for _, id := range []string{"vol-b", "vol-a10", "vol-a", "vol-A", "vol-a1", "vol-a.1", "vol-a_1", "vol-a-1"} {
		mustCreate(t, s, newVolume(id, "name-"+id))
	}
	page, err := s.ListVolumes(t.Context(), store.ListOptions{})
	wantErr(t, "ListVolumes", err, nil)
	wantEqual(t, "ids", ids(page.Volumes),
		[]string{"vol-A", "vol-a", "vol-a-1", "vol-a.1", "vol-a1", "vol-a10", "vol-a_1", "vol-b"})
}

func (su *suite) testUpdate(t *testing.T) {
	s := su.newStore(t)
	tests := []struct {
		name string
		edit func(v *store.Volume)
		want error
	}{
		{"grow", func(v *store.Volume) { v.Size, v.Layout.Size = 2*gib, 2*gib }, nil},
		{"attach", func(v *store.Volume) { v.Attachment.Attach("node-y") }, nil},
		{"detach", func(v *store.Volume) { v.Attachment.Detach() }, nil},
		{"new layout", func(v *store.Volume) { v.Layout.Epoch, v.Layout.Primary = 2, "node-b" }, nil},
		{"same epoch", func(v *store.Volume) { v.Layout.Replicas = v.Layout.Replicas[:1] }, nil},
		{"stale revision", func(v *store.Volume) { v.Revision = 0 }, store.ErrConflict},
		{"future revision", func(v *store.Volume) { v.Revision = 2 }, store.ErrConflict},
		{"missing volume", func(v *store.Volume) { setID(v, "vol-missing") }, store.ErrNotFound},
		{"rename", func(v *store.Volume) { v.Name = "other" }, store.ErrInvalid},
		{"lower epoch", func(v *store.Volume) { v.Layout.Epoch = 0 }, store.ErrInvalid},
		{"lower generation", func(v *store.Volume) { v.Attachment.Generation = 3 }, store.ErrInvalid},
		{"invalid record", func(v *store.Volume) { v.Layout.Size = 1 }, store.ErrInvalid},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			created := mustCreate(t, s, newVolume(fmt.Sprintf("vol-%03d", i), fmt.Sprintf("pvc-%d", i)))
			next := created
			tc.edit(&next)
			got, err := s.UpdateVolume(t.Context(), next)
			wantErr(t, "UpdateVolume", err, tc.want)
			want := created
			if tc.want == nil {
				want = withRevision(next, 2)
				wantEqual(t, "UpdateVolume result", got, want)
			}
			wantEqual(t, "GetVolume", mustGet(t, s, created.ID), want)
		})
	}
}

func (su *suite) testDelete(t *testing.T) {
	s := su.newStore(t)
	v := mustCreate(t, s, newVolume("vol-0001", "pvc-1"))
	steps := []struct {
		name     string
		id       string
		revision uint64
		want     error
	}{
		{"stale revision", "vol-0001", 0, store.ErrConflict},
		{"future revision", "vol-0001", 2, store.ErrConflict},
		{"missing volume", "vol-0002", 1, store.ErrNotFound},
		{"current revision", "vol-0001", 1, nil},
		{"deleted volume", "vol-0001", 1, store.ErrNotFound},
	}
	for _, st := range steps {
		wantErr(t, st.name, s.DeleteVolume(t.Context(), st.id, st.revision), st.want)
		if errors.Is(st.want, store.ErrConflict) {
			wantEqual(t, "volume after "+st.name, mustGet(t, s, "vol-0001"), v)
		}
	}
	_, err := s.GetVolume(t.Context(), "vol-0001")
	wantErr(t, "GetVolume after delete", err, store.ErrNotFound)
	_, err = s.GetVolumeByName(t.Context(), "pvc-1")
	wantErr(t, "GetVolumeByName after delete", err, store.ErrNotFound)

	reuse := mustCreate(t, s, newVolume("vol-0002", "pvc-1"))
	wantEqual(t, "volume reusing the name", reuse, withRevision(newVolume("vol-0002", "pvc-1"), 1))
}

func (su *suite) testCanceledContext(t *testing.T) {
	s := su.newStore(t)
	v := mustCreate(t, s, newVolume("vol-0001", "pvc-1"))
	node := store.Node{ID: "node-a"}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"CreateVolume":    func() error { _, err := s.CreateVolume(ctx, newVolume("vol-0002", "pvc-2")); return err },
		"GetVolume":       func() error { _, err := s.GetVolume(ctx, v.ID); return err },
		"GetVolumeByName": func() error { _, err := s.GetVolumeByName(ctx, v.Name); return err },
		"ListVolumes":     func() error { _, err := s.ListVolumes(ctx, store.ListOptions{}); return err },
		"UpdateVolume":    func() error { _, err := s.UpdateVolume(ctx, v); return err },
		"DeleteVolume":    func() error { return s.DeleteVolume(ctx, v.ID, v.Revision) },
		"PutNode":         func() error { _, err := s.PutNode(ctx, node); return err },
		"GetNode":         func() error { _, err := s.GetNode(ctx, node.ID); return err },
		"ListNodes":       func() error { _, err := s.ListNodes(ctx); return err },
		"DeleteNode":      func() error { return s.DeleteNode(ctx, node.ID, 1) },
	}
	for name, call := range calls {
		wantErr(t, name, call(), context.Canceled)
	}
	wantEqual(t, "volume after canceled calls", mustGet(t, s, v.ID), v)
	_, err := s.GetVolume(t.Context(), "vol-0002")
	wantErr(t, "GetVolume of the canceled create", err, store.ErrNotFound)
}
