package blockstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func newReplica(t *testing.T, size int64) *Replica {
	t.Helper()
	r, err := Create(filepath.Join(t.TempDir(), "vol"), "vol-1", size)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestCreateIsIdempotentAndChecksIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	r, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()

	again, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatalf("second Create with same identity: %v", err)
	}
	again.Close()

	for _, tc := range []struct {
		name string
		id   string
		size int64
	}{
		{"other volume", "vol-2", 1 << 20},
		{"other size", "vol-1", 2 << 20},
	} {
		if _, err := Create(dir, tc.id, tc.size); !errors.Is(err, ErrExists) {
			t.Errorf("%s: got %v, want ErrExists", tc.name, err)
		}
	}
}

func TestDataFileIsSparse(t *testing.T) {
	r := newReplica(t, 1<<30)
	fi, err := os.Stat(r.DataPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 1<<30 {
		t.Fatalf("apparent size %d, want %d", fi.Size(), 1<<30)
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks; blocks != 0 {
		t.Fatalf("fresh replica allocates %d blocks, want 0", blocks)
	}
}

func TestBoundsAreEnforced(t *testing.T) {
	r := newReplica(t, 8192)
	for _, tc := range []struct {
		name   string
		off    int64
		length int64
	}{
		{"past end", 8192, 1},
		{"straddles end", 8000, 400},
		{"negative offset", -1, 10},
		{"huge length", 0, 1 << 62},
	} {
		buf := make([]byte, min(tc.length, 1<<16))
		if tc.length <= 1<<16 {
			if err := r.WriteAt(buf, tc.off); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("%s: WriteAt err %v, want ErrOutOfRange", tc.name, err)
			}
			if err := r.ReadAt(buf, tc.off); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("%s: ReadAt err %v, want ErrOutOfRange", tc.name, err)
			}
		}
		if err := r.PunchHole(tc.off, tc.length); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("%s: PunchHole err %v, want ErrOutOfRange", tc.name, err)
		}
	}
}

func TestUnalignedWriteAndPunchHole(t *testing.T) {
	r := newReplica(t, 3*4096)
	want := make([]byte, 3*4096)
	data := bytes.Repeat([]byte{0xab}, 5000)
	if err := r.WriteAt(data, 1000); err != nil {
		t.Fatal(err)
	}
	copy(want[1000:], data)
	if err := r.PunchHole(1500, 3000); err != nil {
		t.Fatal(err)
	}
	clear(want[1500:4500])
	got := make([]byte, len(want))
	if err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data after unaligned write and hole punch differs from model")
	}
}

func TestEpochIsPersistedAndStaleEpochRefused(t *testing.T) {
	r := newReplica(t, 4096)
	if err := r.ObserveEpoch(5); err != nil {
		t.Fatal(err)
	}
	if err := r.ObserveEpoch(5); err != nil {
		t.Fatalf("same epoch: %v", err)
	}
	if err := r.ObserveEpoch(4); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("lower epoch: got %v, want ErrStaleEpoch", err)
	}
	if err := r.SetRebuilding(true); err != nil {
		t.Fatal(err)
	}
	r.Close()

	reopened, err := Open(r.Dir())
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	want := Meta{VolumeID: "vol-1", Size: 4096, Epoch: 5, Rebuilding: true, Incarnation: r.Meta().Incarnation}
	if got := reopened.Meta(); got != want || want.Incarnation == 0 {
		t.Fatalf("reopened meta %+v, want %+v", got, want)
	}
}

func TestCorruptMetadataIsDetected(t *testing.T) {
	r := newReplica(t, 4096)
	r.Close()
	path := filepath.Join(r.Dir(), metaFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[14] ^= 0x01
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(r.Dir()); !errors.Is(err, ErrCorruptMeta) {
		t.Fatalf("Open of flipped metadata: got %v, want ErrCorruptMeta", err)
	}
}

func TestOpenWithoutMetadataIsNotFound(t *testing.T) {
	if _, err := Open(t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

func TestNextDataSkipsHoles(t *testing.T) {
	r := newReplica(t, 1<<20)
	if err := r.WriteAt(make([]byte, 4096), 512<<10); err != nil {
		t.Fatal(err)
	}
	start, end, err := r.NextData(0)
	if err != nil {
		t.Fatal(err)
	}
	if start != 512<<10 || end != 512<<10+4096 {
		t.Fatalf("NextData(0) = %d,%d, want %d,%d", start, end, 512<<10, 512<<10+4096)
	}
	start, end, err = r.NextData(end)
	if err != nil {
		t.Fatal(err)
	}
	if start != 1<<20 || end != 1<<20 {
		t.Fatalf("NextData past last extent = %d,%d, want end of volume", start, end)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := encodeMeta(Meta{VolumeID: "v", Size: 4096, Epoch: 3})
	f.Add(good)
	f.Add([]byte("TRMD"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := decodeMeta(again); err != nil {
			t.Fatalf("decode of re-encoded meta: %v", err)
		}
	})
}

func TestApplyRunsOnlyAtTheCurrentEpoch(t *testing.T) {
	r := newReplica(t, 4096)
	if err := r.ObserveEpoch(3); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		epoch   uint64
		wantErr error
		wantRan bool
		after   uint64
	}{
		{epoch: 2, wantErr: ErrStaleEpoch, wantRan: false, after: 3},
		{epoch: 3, wantRan: true, after: 3},
		{epoch: 5, wantRan: true, after: 5},
		{epoch: 4, wantErr: ErrStaleEpoch, wantRan: false, after: 5},
	} {
		ran := false
		err := r.Apply(tc.epoch, func() error { ran = true; return nil })
		if !errors.Is(err, tc.wantErr) || ran != tc.wantRan || r.Epoch() != tc.after {
			t.Errorf("Apply(%d): err %v ran %v epoch %d, want err %v ran %v epoch %d",
				tc.epoch, err, ran, r.Epoch(), tc.wantErr, tc.wantRan, tc.after)
		}
	}
}

func TestIncarnationDiffersAfterRecreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "r")
	a, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	first := a.Meta().Incarnation
	a.Close()
	again, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Meta().Incarnation; got != first {
		t.Fatalf("idempotent Create changed the incarnation: %d, then %d", first, got)
	}
	again.Close()
	if err := Remove(dir); err != nil {
		t.Fatal(err)
	}
	b, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Meta().Incarnation == first || b.Meta().Incarnation == 0 {
		t.Fatalf("recreated replica has incarnation %d, first had %d", b.Meta().Incarnation, first)
	}
}

func TestChecksum(t *testing.T) {
	r := newReplica(t, 4<<20)
	if sum, err := r.Checksum(0, 4<<20); err != nil || sum != HoleSum {
		t.Fatalf("empty replica: sum %d, err %v; want HoleSum", sum, err)
	}
	if err := r.WriteAt([]byte("abc"), 1<<20+5); err != nil {
		t.Fatal(err)
	}
	if sum, err := r.Checksum(0, 1<<20); err != nil || sum != HoleSum {
		t.Fatalf("range before the write: sum %d, err %v; want HoleSum", sum, err)
	}
	s1, err := r.Checksum(1<<20, 1<<20)
	if err != nil || s1 == HoleSum {
		t.Fatalf("written range: sum %d, err %v", s1, err)
	}
	if err := r.WriteAt([]byte("abd"), 1<<20+5); err != nil {
		t.Fatal(err)
	}
	if s2, _ := r.Checksum(1<<20, 1<<20); s2 == s1 {
		t.Fatal("a changed byte kept the checksum")
	}
	if _, err := r.Checksum(4<<20-1, 2); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("range past the end: %v, want ErrOutOfRange", err)
	}
}

// TestGrow: the new range reads as zeroes and takes writes, old data
// stays, the size survives a reopen, and a replica never shrinks.
func TestGrow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	r, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0xa5}, 4096)
	if err := r.WriteAt(old, 1<<20-4096); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteAt(old, 1<<20); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end before Grow: %v, want ErrOutOfRange", err)
	}
	if err := r.Grow(4 << 20); err != nil {
		t.Fatalf("Grow: %v", err)
	}
	if err := r.Grow(4 << 20); err != nil {
		t.Fatalf("Grow to the same size: %v", err)
	}
	if err := r.Grow(2 << 20); !errors.Is(err, ErrShrink) {
		t.Fatalf("Grow to a smaller size: %v, want ErrShrink", err)
	}
	got := make([]byte, 4096)
	if err := r.ReadAt(got, 3<<20); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("new range: %v, zeroes %v", err, bytes.Equal(got, make([]byte, 4096)))
	}
	if err := r.WriteAt(old, 4<<20-4096); err != nil {
		t.Fatalf("write at the new end: %v", err)
	}
	r.Close()

	r, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != 4<<20 || r.Meta().Size != 4<<20 {
		t.Fatalf("after reopen: size %d, meta %d; want %d", r.Size(), r.Meta().Size, 4<<20)
	}
	for _, off := range []int64{1<<20 - 4096, 4<<20 - 4096} {
		if err := r.ReadAt(got, off); err != nil || !bytes.Equal(got, old) {
			t.Errorf("data at %d lost after Grow and reopen (err %v)", off, err)
		}
	}
}

// TestOpenAfterInterruptedGrow: a data file longer than the metadata
// (Grow stopped before it recorded the size) opens at the recorded size.
func TestOpenAfterInterruptedGrow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	r, err := Create(dir, "vol-1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := os.Truncate(filepath.Join(dir, dataFile), 2<<20); err != nil {
		t.Fatal(err)
	}
	r, err = Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	if r.Size() != 1<<20 {
		t.Fatalf("size %d, want %d", r.Size(), 1<<20)
	}
	if start, end, err := r.NextData(0); err != nil || start != 1<<20 || end != 1<<20 {
		t.Errorf("NextData(0) = %d, %d, %v; want the end, %d", start, end, err, 1<<20)
	}
	if err := r.Grow(2 << 20); err != nil {
		t.Fatalf("Grow after the interrupted one: %v", err)
	}
}

func TestAlignedBufferAndDirectAligned(t *testing.T) {
	for _, n := range []int{DirectAlign, 3 * DirectAlign, 1 << 20} {
		b := AlignedBuffer(n)
		if len(b) != n || cap(b) != n || !DirectAligned(b, 0) {
			t.Fatalf("AlignedBuffer(%d): len %d cap %d, aligned %v", n, len(b), cap(b), DirectAligned(b, 0))
		}
	}
	b := AlignedBuffer(2 * DirectAlign)
	for _, tc := range []struct {
		name string
		p    []byte
		off  int64
		want bool
	}{
		{"aligned", b, DirectAlign, true},
		{"offset off a block", b, 512, false},
		{"length off a block", b[:DirectAlign+512], 0, false},
		{"memory off a block", b[512 : 512+DirectAlign], 0, false},
		{"empty", b[:0], 0, false},
	} {
		if got := DirectAligned(tc.p, tc.off); got != tc.want {
			t.Errorf("%s: DirectAligned = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWriteAtDirectIsCoherentWithBufferedWrites interleaves direct and
// buffered writes over the same blocks, in both orders, and checks every
// byte against a model: before the replica is closed (the page cache must
// not serve stale pages) and after it is opened again.
func TestWriteAtDirectIsCoherentWithBufferedWrites(t *testing.T) {
	const size = 4 << 20
	r := newReplica(t, size)
	model := make([]byte, size)
	fill := func(p []byte, seed byte) {
		for i := range p {
			p[i] = seed + byte(i*7)
		}
	}
	buffered := func(off, n int64, seed byte) {
		p := make([]byte, n)
		fill(p, seed)
		if err := r.WriteAt(p, off); err != nil {
			t.Fatalf("WriteAt(%d, %d): %v", off, n, err)
		}
		copy(model[off:], p)
	}
	direct := func(p []byte, off int64, seed byte) {
		fill(p, seed)
		if err := r.WriteAtDirect(p, off); err != nil {
			t.Fatalf("WriteAtDirect(%d, %d): %v", off, len(p), err)
		}
		copy(model[off:], p)
	}
	buffered(1000, 300<<10, 1) // dirty pages the direct write below covers
	direct(AlignedBuffer(1<<20), 0, 2)
	if f, err := os.OpenFile(r.DataPath(), os.O_RDONLY|syscall.O_DIRECT, 0); err == nil {
		f.Close()
		if r.direct == nil { // the filesystem takes O_DIRECT: so must the replica
			t.Fatal("an aligned WriteAtDirect did not use O_DIRECT")
		}
	}
	buffered(4096+17, 5000, 3) // lands on blocks the direct write just wrote
	direct(AlignedBuffer(64<<10), 64<<10, 4)
	direct(AlignedBuffer(8192)[:4096+512], 2<<20, 5) // length off a block: buffered
	direct(AlignedBuffer(2 * DirectAlign)[512:512+DirectAlign], 3<<20, 6)
	buffered(size-100, 100, 7)
	direct(AlignedBuffer(1<<20), size-1<<20, 8)

	check := func(when string) {
		got := make([]byte, size)
		if err := r.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if i := firstDifference(got, model); i >= 0 {
			t.Fatalf("%s: byte %d is %#x, want %#x", when, i, got[i], model[i])
		}
	}
	check("before close")
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	dir := r.Dir()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteAtDirect(AlignedBuffer(4096), 0); err == nil {
		t.Fatal("WriteAtDirect on a closed replica succeeded")
	}
	var err error
	if r, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check("after reopening")
	if err := r.WriteAtDirect(AlignedBuffer(4096), size); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("WriteAtDirect past the end: %v, want ErrOutOfRange", err)
	}
}

func firstDifference(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
