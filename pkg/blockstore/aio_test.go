package blockstore

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// writeAll starts writes through w, at most depth at once, and waits for
// every one. It returns their errors by index.
func writeAll(w *DirectWriter, epoch uint64, depth int, bufs [][]byte, offs []int64) []error {
	errs := make([]error, len(bufs))
	slots := make(chan struct{}, depth)
	var wg sync.WaitGroup
	for i := range bufs {
		slots <- struct{}{}
		wg.Add(1)
		w.WriteAt(epoch, bufs[i], offs[i], func(err error) {
			errs[i] = err
			<-slots
			wg.Done()
		})
	}
	wg.Wait()
	return errs
}

func TestDirectWriterWritesLandWhereTheySay(t *testing.T) {
	const size = 64 << 20
	r := newReplica(t, size)
	if err := r.ObserveEpoch(3); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(7, 8))
	var bufs [][]byte
	var offs []int64
	// Aligned writes of 4 KiB to 1 MiB in a shuffled order, none
	// overlapping another (the caller orders overlapping ones), and a few
	// unaligned ones, which take the fallback.
	var off int64
	for off < size-(2<<20) {
		n := int64(4096 * (1 + rng.IntN(256)))
		p := AlignedBuffer(int(n))
		if len(bufs)%9 == 8 {
			p = make([]byte, n-100) // unaligned length
		}
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		bufs, offs = append(bufs, p), append(offs, off)
		copy(model[off:], p)
		off += n + 4096*int64(rng.IntN(3))
	}
	order := rng.Perm(len(bufs))
	shuffledBufs, shuffledOffs := make([][]byte, len(bufs)), make([]int64, len(bufs))
	for i, j := range order {
		shuffledBufs[i], shuffledOffs[i] = bufs[j], offs[j]
	}

	w := r.NewDirectWriter(8)
	for i, err := range writeAll(w, 3, 8, shuffledBufs, shuffledOffs) {
		if err != nil {
			t.Fatalf("write %d at %d: %v", i, shuffledOffs[i], err)
		}
	}
	if !w.Asynchronous() {
		t.Fatal("the writer did not get an asynchronous I/O context")
	}
	if w.submitted.Load() == 0 {
		t.Fatal("no write went through asynchronous I/O")
	}
	w.Close()

	got := make([]byte, size)
	if err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDifference(got, model); i >= 0 {
		t.Fatalf("data differs from the model at byte %d", i)
	}
}

// A raise of the epoch waits for the writes of the epoch before it: once
// the replica has observed the new epoch, every older write is on the
// disk and none lands afterwards. A write at the old epoch is refused and
// changes nothing.
func TestDirectWriterHoldsTheEpochUntilItsWritesAreDone(t *testing.T) {
	// Enough writes that the disk is still busy with them when the raise
	// comes; they may all share one buffer.
	const n, chunk = 128, 1 << 20
	r := newReplica(t, n*chunk)
	if err := r.ObserveEpoch(1); err != nil {
		t.Fatal(err)
	}
	w := r.NewDirectWriter(n)
	defer w.Close()
	p := AlignedBuffer(chunk)
	for j := range p {
		p[j] = byte(j>>12 + 1)
	}
	model := bytes.Repeat(p, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		w.WriteAt(1, p, int64(i*chunk), func(err error) {
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
			wg.Done()
		})
	}
	// The metadata lock, which a raise takes exclusive, is free only once
	// the kernel has reported every write done.
	for !r.mu.TryLock() {
		time.Sleep(50 * time.Microsecond)
	}
	w.mu.Lock()
	pending := len(w.pending)
	w.mu.Unlock()
	r.mu.Unlock()
	if pending > 0 {
		t.Fatalf("the epoch could be raised with %d writes of the epoch before it at the disk", pending)
	}
	if err := r.ObserveEpoch(2); err != nil {
		t.Fatal(err)
	}
	atRaise := make([]byte, len(model))
	if err := r.ReadAt(atRaise, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDifference(atRaise, model); i >= 0 {
		t.Fatalf("epoch 2 observed while a write of epoch 1 was not on the disk: byte %d differs", i)
	}
	wg.Wait()

	stale := make(chan error, 1)
	w.WriteAt(1, AlignedBuffer(chunk), 0, func(err error) { stale <- err })
	if err := <-stale; !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("write at a stale epoch: %v, want ErrStaleEpoch", err)
	}
	after := make([]byte, len(model))
	if err := r.ReadAt(after, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDifference(after, model); i >= 0 {
		t.Fatalf("data changed after the raise at byte %d", i)
	}
}

func TestDirectWriterRefusesWritesOutsideTheVolume(t *testing.T) {
	r := newReplica(t, 1<<20)
	w := r.NewDirectWriter(2)
	defer w.Close()
	got := make(chan error, 1)
	w.WriteAt(0, AlignedBuffer(8192), 1<<20-4096, func(err error) { got <- err })
	if err := <-got; !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end: %v, want ErrOutOfRange", err)
	}
}
