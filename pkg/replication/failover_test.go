package replication

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// A previous primary sent writes no client saw acknowledged to some
// replicas and not others. The primary that takes over makes every InSync
// replica byte-identical to itself, and acknowledges new writes meanwhile.
func TestNewPrimaryRepairsDivergentInSyncReplicas(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 8 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	for _, r := range []*blockstore.Replica{ra, rb, rc} {
		if err := r.WriteAt(bytesOf('x', 3<<20), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	// Unacknowledged leftovers: a has one the others lack, c one of its
	// own, b a region a never wrote (a holds a hole there).
	must(t, ra.WriteAt(bytesOf('a', 5000), 2<<20+100))
	must(t, rc.WriteAt(bytesOf('c', 700), 3<<20+4000))
	must(t, rb.WriteAt(bytesOf('b', 4096), 6<<20))

	l := layoutOf(vol, size, 2, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: newTestController(l), CopyChunk: 256 << 10})
	if err := p.WriteAt(context.Background(), []byte("new"), 3<<20+4100, false); err != nil {
		t.Fatalf("write during verification: %v", err)
	}
	waitVerified(t, p, "b", "c")
	must(t, p.Flush(context.Background()))
	want, err := os.ReadFile(ra.DataPath())
	must(t, err)
	requireIdentical(t, want, rb, rc)
	st := p.Status()
	for _, s := range st[1:] {
		// Only the chunks holding a difference travel: two 256 KiB
		// chunks for b (a's write and b's own), two for c.
		if s.CopiedBytes == 0 || s.CopiedBytes > 2*256<<10 {
			t.Errorf("replica %s: verification copied %d bytes, want 1 to 2 chunks", s.NodeID, s.CopiedBytes)
		}
	}
}

// A replica that left the write path and comes back gets only the regions
// written meanwhile, plus those it had not made durable, not the volume.
func TestReturningReplicaCopiesOnlyWhatItMissed(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 16 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	ctl := newTestController(l)
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: ctl, AckTimeout: 5 * time.Second})
	ctx := context.Background()
	fill(t, p, size)
	// A replica that leaves before the new primary verified it gets a
	// full comparison; this one has been verified.
	waitVerified(t, p, "b", "c")

	addr := c.addr
	c.stop()
	rng := rand.New(rand.NewPCG(1, 2))
	var written int64
	for i := range 20 {
		n := int64(1 + rng.IntN(6000))
		off := rng.Int64N(size - n)
		if err := p.WriteAt(ctx, bytesOf(byte('0'+i%10), int(n)), off, false); err != nil {
			t.Fatalf("write while c is away: %v", err)
		}
		written += n
	}
	waitFor(t, "c out of the layout", func() bool { return stateOf(p.Layout(), "c") == Faulted })

	c.listen(t, addr)
	next := ctl.setState("c", Syncing)
	must(t, p.UpdateLayout(next))
	waitFor(t, "c back InSync", func() bool { return stateOf(ctl.current(), "c") == InSync })
	must(t, p.Flush(ctx))
	want, err := os.ReadFile(ra.DataPath())
	must(t, err)
	requireIdentical(t, want, rb, rc)

	var copied int64
	for _, s := range p.Status() {
		if s.NodeID == "c" {
			copied = s.CopiedBytes
		}
	}
	// Each write of at most 6000 bytes touches at most three 4 KiB grains.
	if copied == 0 || copied > 20*3*regionGrain {
		t.Fatalf("resync copied %d bytes for %d bytes written in 20 writes; want at most %d", copied, written, 20*3*regionGrain)
	}
	t.Logf("resync copied %d bytes for %d bytes written while away (volume %d bytes)", copied, written, size)
}

// A replica deleted and created again while away holds nothing of what the
// tracker assumes: it must get a full comparison, not the missed regions.
func TestRecreatedReplicaIsNotResumedFromTracker(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 4 << 20
	ra, rb, _ := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	ctl := newTestController(l)
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: ctl, AckTimeout: 5 * time.Second})
	ctx := context.Background()
	fill(t, p, size)

	addr := c.addr
	c.stop()
	must(t, p.WriteAt(ctx, []byte("away"), 100, false))
	waitFor(t, "c out of the layout", func() bool { return stateOf(p.Layout(), "c") == Faulted })
	c.mu.Lock()
	old := c.replicas[vol]
	c.mu.Unlock()
	old.Close()
	must(t, blockstore.Remove(old.Dir()))
	rc := c.create(t, vol, size)
	c.listen(t, addr)
	must(t, p.UpdateLayout(ctl.setState("c", Syncing)))
	waitFor(t, "c back InSync", func() bool { return stateOf(ctl.current(), "c") == InSync })
	must(t, p.Flush(ctx))
	want, err := os.ReadFile(ra.DataPath())
	must(t, err)
	requireIdentical(t, want, rb, rc)
}

// Below MinInSync copies a write is not acknowledged; it fails cleanly
// after DegradedTimeout, and writes go on once a replica is back.
func TestWritesWaitBelowMinInSyncThenFail(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 1 << 20
	ra, _, _ := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(Faulted))
	l.MinInSync = 2
	ctl := newTestController(l)
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: ctl,
		AckTimeout: 300 * time.Millisecond, DegradedTimeout: 2 * time.Second})
	ctx := context.Background()
	must(t, p.WriteAt(ctx, []byte("two copies"), 0, false))

	b.stop()
	start := time.Now()
	err := p.WriteAt(ctx, []byte("one copy"), 4096, false)
	if !errors.Is(err, ErrDegraded) {
		t.Fatalf("write with one copy of a minimum of two: %v, want ErrDegraded", err)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("write failed after %s, before DegradedTimeout", waited)
	}
	if stateOf(p.Layout(), "b") != Faulted {
		t.Fatalf("layout %v, want b Faulted", p.Layout())
	}

	// c comes back as Syncing: once its copy is complete it counts.
	result := make(chan error, 1)
	go func() { result <- p.WriteAt(ctx, []byte("again"), 8192, false) }()
	must(t, p.UpdateLayout(ctl.setState("c", Syncing)))
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("write once c caught up: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write still waiting after c caught up")
	}
}

// A primary whose writes wait on a fault report nobody answers stops
// serving after FenceTimeout, so that clients go and look for the current
// primary instead of waiting on this one.
func TestPrimaryStopsServingWhenReportsGoUnanswered(t *testing.T) {
	a, b, _ := threeZones(t)
	const size = 1 << 20
	ra, _ := a.create(t, vol, size), b.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync))
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: unreachable{},
		AckTimeout: 200 * time.Millisecond, RetryInterval: 50 * time.Millisecond, FenceTimeout: 500 * time.Millisecond})
	b.stop()
	err := p.WriteAt(context.Background(), []byte("x"), 0, false)
	if !errors.Is(err, ErrUnreachable) || !errors.Is(p.Fenced(), ErrUnreachable) {
		t.Fatalf("write: %v, fenced: %v; want ErrUnreachable", err, p.Fenced())
	}
}

type unreachable struct{}

func (unreachable) ReplicaFaulted(context.Context, string, uint64, string, error) (Layout, error) {
	return Layout{}, errors.New("connection refused")
}

func (unreachable) ReplicaSynced(context.Context, string, uint64, string) (Layout, error) {
	return Layout{}, errors.New("connection refused")
}

func (c *testController) current() Layout {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.layout
}

func stateOf(l Layout, node string) ReplicaState {
	for _, r := range l.Replicas {
		if r.NodeID == node {
			return r.State
		}
	}
	return ""
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func waitVerified(t *testing.T, p *Primary, nodes ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("verification of %v", nodes), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, n := range nodes {
			if l, ok := p.links[n]; !ok || !l.verified.Load() {
				return false
			}
		}
		return true
	})
}

// fill writes the whole volume, a megabyte at a time, and flushes.
func fill(t *testing.T, p *Primary, size int64) {
	t.Helper()
	for off := int64(0); off < size; off += 1 << 20 {
		must(t, p.WriteAt(context.Background(), bytesOf('f', 1<<20), off, false))
	}
	must(t, p.Flush(context.Background()))
}
