package replication

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

const vol = "vol-1"

func TestConcurrentWritesReachEveryInSyncReplica(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 8 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a"})

	m := &model{data: make([]byte, size)}
	if err := runWriters(context.Background(), p, m, 8, 400); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	requireIdentical(t, m.data, ra, rb, rc)
	for _, r := range []interface{ Epoch() uint64 }{ra, rb, rc} {
		if r.Epoch() != 1 {
			t.Errorf("replica epoch %d, want 1", r.Epoch())
		}
	}
}

func TestOverlappingConcurrentWritesLeaveReplicasIdentical(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 64 << 10
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a"})

	// Every writer hits the same small range: the order in which the
	// primary applied them must be the order on every replica.
	done := make(chan error, 8)
	for w := 0; w < 8; w++ {
		go func() {
			for i := 0; i < 200; i++ {
				buf := bytes.Repeat([]byte{byte(w*31 + i)}, 1+(i*97)%5000)
				if err := p.WriteAt(context.Background(), buf, int64((i*131)%2000), false); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for w := 0; w < 8; w++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	want := make([]byte, size)
	if err := ra.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	requireIdentical(t, want, rb, rc)
}

func TestWritesWaitForFaultedReplicaUntilLayoutDropsIt(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 1 << 20
	ra, rb, _ := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	ctl := newTestController(l)
	ctl.gate = make(chan struct{})
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: ctl, AckTimeout: 300 * time.Millisecond})

	ctx := context.Background()
	if err := p.WriteAt(ctx, []byte("before"), 0, false); err != nil {
		t.Fatal(err)
	}
	c.stop()

	result := make(chan error, 1)
	go func() { result <- p.WriteAt(ctx, []byte("during"), 4096, false) }()
	select {
	case r := <-ctl.reports:
		if r != "faulted:c" {
			t.Fatalf("report %q, want faulted:c", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("primary did not report the dead replica")
	}
	// The controller has not answered: the write must not be acknowledged.
	select {
	case err := <-result:
		t.Fatalf("write acknowledged (err=%v) while a faulted InSync replica was still in the layout", err)
	case <-time.After(500 * time.Millisecond):
	}

	close(ctl.gate)
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("write after layout change: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write still waiting after the layout dropped the faulted replica")
	}
	if got := p.Layout().Epoch; got != 2 {
		t.Fatalf("primary epoch %d, want 2", got)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, "before")
	copy(want[4096:], "during")
	requireIdentical(t, want, ra, rb)
	if rb.Epoch() != 2 || ra.Epoch() != 2 {
		t.Fatalf("epochs a=%d b=%d, want 2 on both", ra.Epoch(), rb.Epoch())
	}
}

func TestDeposedPrimaryIsRefusedByReplicas(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 1 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	old := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	pa := startPrimary(t, ra, old, PrimaryOptions{NodeID: "a"})
	ctx := context.Background()
	if err := pa.WriteAt(ctx, []byte("epoch one"), 0, false); err != nil {
		t.Fatal(err)
	}

	// The controller makes b primary at epoch 2 without telling a.
	next := layoutOf(vol, size, 2, "b", a.info(Faulted), b.info(InSync), c.info(InSync))
	pb := startPrimary(t, rb, next, PrimaryOptions{NodeID: "b"})
	if err := pb.WriteAt(ctx, []byte("epoch two"), 0, false); err != nil {
		t.Fatal(err)
	}

	err := pa.WriteAt(ctx, []byte("zombie!!!"), 0, false)
	if !errors.Is(err, ErrDeposed) {
		t.Fatalf("write from deposed primary: got %v, want ErrDeposed", err)
	}
	if err := pa.WriteAt(ctx, []byte("again"), 0, false); !errors.Is(err, ErrDeposed) {
		t.Fatalf("second write from deposed primary: got %v, want ErrDeposed", err)
	}
	for name, r := range map[string]interface {
		ReadAt([]byte, int64) error
	}{"b": rb, "c": rc} {
		got := make([]byte, 9)
		if err := r.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if string(got) != "epoch two" {
			t.Errorf("replica %s holds %q, want %q", name, got, "epoch two")
		}
	}
}

func TestPrimaryRefusesToStartBelowPersistedEpoch(t *testing.T) {
	a := startNode(t, "a", "zone-a", "127.0.0.1")
	ra := a.create(t, vol, 4096)
	if err := ra.ObserveEpoch(7); err != nil {
		t.Fatal(err)
	}
	_, err := NewPrimary(ra, layoutOf(vol, 4096, 6, "a", a.info(InSync)), PrimaryOptions{NodeID: "a"})
	if err == nil {
		t.Fatal("primary started with an epoch below the replica's")
	}
}

func TestLayoutCannotMakeUncopiedReplicaInSync(t *testing.T) {
	a, b, _ := threeZones(t)
	const size = 1 << 20
	ra, _ := a.create(t, vol, size), b.create(t, vol, size)
	p := startPrimary(t, ra, layoutOf(vol, size, 1, "a", a.info(InSync)), PrimaryOptions{NodeID: "a"})
	err := p.UpdateLayout(layoutOf(vol, size, 2, "a", a.info(InSync), b.info(InSync)))
	if !errors.Is(err, ErrInvalidLayout) {
		t.Fatalf("got %v, want ErrInvalidLayout", err)
	}
	if p.Layout().Epoch != 1 {
		t.Fatalf("layout changed to epoch %d", p.Layout().Epoch)
	}
}

func TestSyncingReplicaCatchesUpUnderWriteLoad(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 32 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync))
	ctl := newTestController(l)
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", Reporter: ctl, CopyChunk: 64 << 10, CopyWindow: 256 << 10})

	m := &model{data: make([]byte, size)}
	ctx := context.Background()
	if err := runWriters(ctx, p, m, 4, 200); err != nil {
		t.Fatal(err)
	}

	// c joins as Syncing while writers keep going.
	withC := layoutOf(vol, size, 2, "a", a.info(InSync), b.info(InSync), c.info(Syncing))
	ctl.mu.Lock()
	ctl.layout = withC
	ctl.mu.Unlock()
	load, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() { loadDone <- runWriters(load, p, m, 8, 1<<30) }()
	if err := p.UpdateLayout(withC); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ctl.reports:
		if r != "synced:c" {
			t.Fatalf("report %q, want synced:c", r)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("syncing replica never finished")
	}
	waitFor(t, "c to be InSync", func() bool { return p.Layout().Epoch == 3 })
	time.Sleep(200 * time.Millisecond) // writes that now count c
	stopLoad()
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	requireIdentical(t, m.data, ra, rb, rc)
	if rc.Meta().Rebuilding {
		t.Fatal("replica c is still marked rebuilding after its copy")
	}
	for _, st := range p.Status() {
		if st.NodeID == "c" && (st.State != InSync || st.SyncedBytes != size) {
			t.Fatalf("status of c: %+v, want InSync with %d bytes synced", st, size)
		}
	}
}

func TestDeposedPrimaryCannotChangeItsOwnCopy(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 1 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	old := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	pa := startPrimary(t, ra, old, PrimaryOptions{NodeID: "a"})
	ctx := context.Background()

	// b takes over at epoch 2 and still counts a as InSync: its hello
	// raises a's replica to epoch 2.
	next := layoutOf(vol, size, 2, "b", a.info(InSync), b.info(InSync), c.info(InSync))
	pb := startPrimary(t, rb, next, PrimaryOptions{NodeID: "b"})
	if err := pb.WriteAt(ctx, []byte{0x11}, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := pa.WriteAt(ctx, []byte{0x22}, 0, false); !errors.Is(err, ErrDeposed) {
		t.Fatalf("write through deposed primary: got %v, want ErrDeposed", err)
	}
	if pa.Fenced() == nil {
		t.Fatal("deposed primary does not report itself fenced")
	}
	for name, r := range map[string]interface{ ReadAt([]byte, int64) error }{"a": ra, "b": rb, "c": rc} {
		got := make([]byte, 1)
		if err := r.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if got[0] != 0x11 {
			t.Errorf("replica %s holds %#x, want the acknowledged 0x11", name, got[0])
		}
	}
}

func TestCopiedReplicaCountsBeforeTheControllerAnswers(t *testing.T) {
	a, b, c := threeZones(t)
	const size = 4 << 20
	ra, rb, _ := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	withC := layoutOf(vol, size, 2, "a", a.info(InSync), b.info(InSync), c.info(Syncing))
	ctl := newTestController(withC)
	ctl.syncGate = make(chan struct{})
	ctl.gate = make(chan struct{})
	p := startPrimary(t, ra, withC, PrimaryOptions{NodeID: "a", Reporter: ctl, AckTimeout: 300 * time.Millisecond})
	if r := <-ctl.reports; r != "synced:c" {
		t.Fatalf("report %q, want synced:c", r)
	}

	// The controller may already have persisted c as InSync: a write
	// must now wait for c, and c is gone.
	c.stop()
	result := make(chan error, 1)
	go func() { result <- p.WriteAt(context.Background(), []byte("x"), 0, false) }()
	select {
	case err := <-result:
		t.Fatalf("write acknowledged (err=%v) without a replica whose copy completed", err)
	case <-time.After(time.Second):
	}
	if r := <-ctl.reports; r != "faulted:c" {
		t.Fatalf("report %q, want faulted:c", r)
	}

	// The controller now answers the sync report: c InSync at epoch 3.
	// c is still gone, so the write keeps waiting.
	close(ctl.syncGate)
	waitFor(t, "epoch 3", func() bool { return p.Layout().Epoch == 3 })
	select {
	case err := <-result:
		t.Fatalf("write acknowledged (err=%v) while the layout lists a dead replica as InSync", err)
	case <-time.After(500 * time.Millisecond):
	}
	close(ctl.gate)
	if err := <-result; err != nil {
		t.Fatal(err)
	}
	if got := p.Layout(); got.Epoch != 4 || got.Replicas[2].State != Faulted {
		t.Fatalf("layout %+v, want epoch 4 with c Faulted", got)
	}
	want := make([]byte, size)
	want[0] = 'x'
	p.Flush(context.Background())
	requireIdentical(t, want, ra, rb)
}

func TestPrimaryRefusesUnsafeStarts(t *testing.T) {
	a, b, _ := threeZones(t)
	ra, _ := a.create(t, vol, 4096), b.create(t, vol, 4096)
	dup := b.info(InSync)
	dup.Address = a.addr
	if _, err := NewPrimary(ra, layoutOf(vol, 4096, 1, "a", a.info(InSync), dup), PrimaryOptions{NodeID: "a"}); !errors.Is(err, ErrInvalidLayout) {
		t.Errorf("two replicas at one address: got %v, want ErrInvalidLayout", err)
	}
	if err := ra.SetRebuilding(true); err != nil {
		t.Fatal(err)
	}
	if _, err := NewPrimary(ra, layoutOf(vol, 4096, 1, "a", a.info(InSync)), PrimaryOptions{NodeID: "a"}); !errors.Is(err, ErrIncomplete) {
		t.Errorf("primary on an incomplete copy: got %v, want ErrIncomplete", err)
	}
}
