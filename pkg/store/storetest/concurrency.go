package storetest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/trireme-csi/trireme/pkg/store"
)

// race runs fn(0) through fn(n-1) on n goroutines released together, and
// returns their errors in order.
func race(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// winners returns the indexes of the nil errors, and fails the test for
// any error that is not want.
func winners(t *testing.T, errs []error, want error) []int {
	t.Helper()
	var won []int
	for i, err := range errs {
		switch {
		case err == nil:
			won = append(won, i)
		case !errors.Is(err, want):
			t.Errorf("racer %d: error %v, want nil or %v", i, err, want)
		}
	}
	return won
}

func (su *suite) testConcurrentCreateOneName(t *testing.T) {
	s := su.newStore(t)
	const n = 20
	errs := race(n, func(i int) error {
		_, err := s.CreateVolume(t.Context(), newVolume(fmt.Sprintf("vol-%03d", i), "pvc-contested"))
		return err
	})
	won := winners(t, errs, store.ErrExists)
	if len(won) != 1 {
		t.Fatalf("%d creators won, want exactly 1", len(won))
	}
	winner := fmt.Sprintf("vol-%03d", won[0])
	got, err := s.GetVolumeByName(t.Context(), "pvc-contested")
	wantErr(t, "GetVolumeByName", err, nil)
	wantEqual(t, "volume named pvc-contested", got, withRevision(newVolume(winner, "pvc-contested"), 1))
	page, err := s.ListVolumes(t.Context(), store.ListOptions{})
	wantErr(t, "ListVolumes", err, nil)
	wantEqual(t, "ids", ids(page.Volumes), []string{winner})
}

func (su *suite) testConcurrentCreateOneID(t *testing.T) {
	s := su.newStore(t)
	const n = 20
	errs := race(n, func(i int) error {
		_, err := s.CreateVolume(t.Context(), newVolume("vol-contested", fmt.Sprintf("pvc-%d", i)))
		return err
	})
	won := winners(t, errs, store.ErrExists)
	if len(won) != 1 {
		t.Fatalf("%d creators won, want exactly 1", len(won))
	}
	for i := range n {
		_, err := s.GetVolumeByName(t.Context(), fmt.Sprintf("pvc-%d", i))
		want := store.ErrNotFound
		if i == won[0] {
			want = nil
		}
		wantErr(t, fmt.Sprintf("GetVolumeByName(pvc-%d)", i), err, want)
	}
}

// testConcurrentUpdateCounts has workers increment the attachment
// generation with read-modify-write loops on UpdateVolume: with a correct
// compare-and-swap no increment is lost.
func (su *suite) testConcurrentUpdateCounts(t *testing.T) {
	s := su.newStore(t)
	v := newVolume("vol-0001", "pvc-1")
	v.Attachment.Generation = 0
	mustCreate(t, s, v)
	const workers, each = 8, 10
	errs := race(workers, func(int) error {
		for range each {
			if err := incrementGeneration(t, s, "vol-0001"); err != nil {
				return err
			}
		}
		return nil
	})
	for i, err := range errs {
		wantErr(t, fmt.Sprintf("worker %d", i), err, nil)
	}
	got := mustGet(t, s, "vol-0001")
	wantEqual(t, "generation", got.Attachment.Generation, uint64(workers*each))
	wantEqual(t, "revision", got.Revision, uint64(1+workers*each))
}

func incrementGeneration(t *testing.T, s store.Store, id string) error {
	for {
		v, err := s.GetVolume(t.Context(), id)
		if err != nil {
			return err
		}
		v.Attachment.Generation++
		_, err = s.UpdateVolume(t.Context(), v)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

func (su *suite) testMutate(t *testing.T) {
	s := su.newStore(t)
	v := mustCreate(t, s, newVolume("vol-0001", "pvc-1"))
	got, err := store.Mutate(t.Context(), s, "vol-0001", func(v *store.Volume) error {
		v.Attachment.Attach("node-y")
		v.ID, v.Revision = "vol-other", 42
		return nil
	})
	wantErr(t, "Mutate", err, nil)
	want := withRevision(v, 2)
	want.Attachment = store.Attachment{NodeID: "node-y", Generation: 5}
	wantEqual(t, "Mutate result", got, want)
	wantEqual(t, "GetVolume", mustGet(t, s, "vol-0001"), want)
}

func (su *suite) testBumpEpoch(t *testing.T) {
	s := su.newStore(t)
	errBoom := errors.New("boom")
	edit := func(fn func(v *store.Volume)) func(*store.Volume) error {
		return func(v *store.Volume) error { fn(v); return nil }
	}
	noop := edit(func(*store.Volume) {})
	tests := []struct {
		name      string
		epoch     uint64 // of the stored volume
		missing   bool
		mutate    func(v *store.Volume) error
		want      error
		wantEpoch uint64 // if want is nil
	}{
		{"fault a replica", 7, false, edit(func(v *store.Volume) { v.Layout.Replicas[1].State = "Faulted" }), nil, 8},
		{"no change but the epoch", 7, false, noop, nil, 8},
		{"raised epoch is replaced", 7, false, edit(func(v *store.Volume) { v.Layout.Epoch = 100 }), nil, 8},
		{"lowered epoch is replaced", 7, false, edit(func(v *store.Volume) { v.Layout.Epoch = 1 }), nil, 8},
		{"id and revision are kept", 7, false, edit(func(v *store.Volume) { v.ID, v.Revision = "vol-x", 9 }), nil, 8},
		{"mutate fails", 7, false, func(*store.Volume) error { return errBoom }, errBoom, 0},
		{"invalid result", 7, false, edit(func(v *store.Volume) { v.Size = -1 }), store.ErrInvalid, 0},
		{"missing volume", 7, true, noop, store.ErrNotFound, 0},
		{"epoch would wrap", math.MaxUint64, false, noop, store.ErrInvalid, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolume(fmt.Sprintf("vol-%03d", i), fmt.Sprintf("pvc-%d", i))
			v.Layout.Epoch = tc.epoch
			v = mustCreate(t, s, v)
			id := v.ID
			if tc.missing {
				id = "vol-missing"
			}
			got, err := store.BumpEpoch(t.Context(), s, id, tc.mutate)
			wantErr(t, "BumpEpoch", err, tc.want)
			if tc.want != nil {
				wantEqual(t, "volume after failed BumpEpoch", mustGet(t, s, v.ID), v)
				return
			}
			wantEqual(t, "epoch", got.Layout.Epoch, tc.wantEpoch)
			wantEqual(t, "revision", got.Revision, uint64(2))
			wantEqual(t, "GetVolume", mustGet(t, s, v.ID), got)
		})
	}
}

// testConcurrentBumpEpoch has workers bump one volume's epoch at once:
// every bump gets its own epoch, and together they are consecutive.
func (su *suite) testConcurrentBumpEpoch(t *testing.T) {
	s := su.newStore(t)
	v := newVolume("vol-0001", "pvc-1")
	v.Layout.Epoch = 10
	mustCreate(t, s, v)
	const workers, each = 10, 5
	var mu sync.Mutex
	var epochs []uint64
	errs := race(workers, func(w int) error {
		for range each {
			primary := fmt.Sprintf("node-%d", w)
			got, err := store.BumpEpoch(t.Context(), s, "vol-0001", func(v *store.Volume) error {
				v.Layout.Primary = primary
				return nil
			})
			if err != nil {
				return err
			}
			if got.Layout.Primary != primary {
				return fmt.Errorf("epoch %d has primary %s, want %s", got.Layout.Epoch, got.Layout.Primary, primary)
			}
			mu.Lock()
			epochs = append(epochs, got.Layout.Epoch)
			mu.Unlock()
		}
		return nil
	})
	for i, err := range errs {
		wantErr(t, fmt.Sprintf("worker %d", i), err, nil)
	}
	slices.Sort(epochs)
	want := make([]uint64, workers*each)
	for i := range want {
		want[i] = 11 + uint64(i)
	}
	wantEqual(t, "epochs handed out", epochs, want)
	got := mustGet(t, s, "vol-0001")
	wantEqual(t, "final epoch", got.Layout.Epoch, uint64(10+workers*each))
	wantEqual(t, "final revision", got.Revision, uint64(1+workers*each))
}
