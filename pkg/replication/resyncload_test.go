package replication

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// TestLayoutChangesDuringAResyncDoNotFenceThePrimary: copy frames of
// successive epochs through a real primary. While b is being copied, the layout changes (same primary, same
// replicas, higher epoch), as it does when the controller confirms a
// layout or another replica faults. No other primary exists, so the
// primary must not consider itself deposed. The volume is 32 chunks, so
// that every checksum request is queued first and the copy frames follow
// one another (a checksum between two copies would wait for the first).
func TestLayoutChangesDuringAResyncDoNotFenceThePrimary(t *testing.T) {
	a := startNode(t, "a", "zone-a", "127.0.0.1")
	b := startNode(t, "b", "zone-b", "127.0.0.2")
	const chunk = 1 << 20
	const size = compareAhead * chunk
	buf := bytes.Repeat([]byte{0x5a}, chunk)
	for trial := range 5 {
		volume := fmt.Sprintf("vol-epochs-%d", trial)
		ra := a.create(t, volume, size)
		b.create(t, volume, size)
		for off := int64(0); off < size; off += chunk {
			buf[0] = byte(off >> 20)
			if err := ra.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
		}
		epoch := uint64(1)
		l := layoutOf(volume, size, epoch, "a", a.info(InSync), b.info(Syncing))
		p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a", CopyChunk: chunk, CopyWindow: 16 * chunk})
		copied := func() int64 {
			for _, st := range p.Status() {
				if st.NodeID == "b" {
					return st.CopiedBytes
				}
			}
			return 0
		}
		deadline := time.Now().Add(60 * time.Second)
		for copied() < size && p.Fenced() == nil && time.Now().Before(deadline) {
			epoch++
			if err := p.UpdateLayout(layoutOf(volume, size, epoch, "a", a.info(InSync), b.info(Syncing))); err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := p.Fenced(); err != nil {
			t.Fatalf("trial %d: the only primary fenced itself during a resync across %d layout changes: %v",
				trial, epoch-1, err)
		}
		if got := copied(); got < size {
			t.Fatalf("trial %d: copied %d of %d bytes", trial, got, size)
		}
		t.Logf("trial %d: %d layout changes during the copy, primary not fenced", trial, epoch-1)
	}
}

// TestARefusedFrameWithTheBudgetTakenEndsItsConnection: a frame that Admit
// refuses ends the apply loop while the reader goroutine, having decoded
// frames ahead, waits in budget.Acquire for budget that those very frames
// hold. The connection must still end and give its budget back, and
// Server.Close must return.
func TestARefusedFrameWithTheBudgetTakenEndsItsConnection(t *testing.T) {
	const mib = 1 << 20
	n := &testNode{id: "a", zone: "zone-a", dir: t.TempDir(), replicas: map[string]*blockstore.Replica{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	gate := make(chan struct{})
	n.lis, n.addr = lis, lis.Addr().String()
	srv := NewServer(n, ServerOptions{NodeID: "a", MaxBufferedBytes: 4 * mib,
		Admit: func(peer, volume string, epoch uint64) error {
			if epoch <= 5 {
				return nil
			}
			<-gate
			return errors.New("not the primary at that epoch")
		}})
	n.srv = srv
	go srv.Serve(lis)
	n.create(t, vol, 16*mib)

	c, rd := dialRaw(t, n)
	if st := roundTrip(t, c, rd, hello(5)).Status; st != StatusOK {
		t.Fatalf("hello status %d", st)
	}
	go func() {
		w := bufio.NewWriter(c)
		(&Frame{Op: OpFlush, ID: 2, Epoch: 6}).WriteTo(w)
		for i := range 5 {
			f := Frame{Op: OpWrite, ID: uint64(3 + i), Epoch: 6, Offset: uint64(i) * mib, Length: mib, Payload: make([]byte, mib)}
			f.WriteTo(w)
		}
		w.Flush()
	}()
	for end := time.Now().Add(10 * time.Second); srv.budget.Held() < 4*mib; {
		if time.Now().After(end) {
			t.Fatalf("the reader never queued 4 MiB: held %d", srv.budget.Held())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the reader reaches Acquire for the fifth write
	close(gate)
	f, err := ReadFrame(rd)
	if err != nil || f.ID != 2 || f.Status != StatusForbidden {
		t.Fatalf("reply %+v, %v; want forbidden for id 2", f, err)
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("Server.Close still waiting after 5s; budget held %d bytes by a connection that closed",
			srv.budget.Held())
	}
	if h := srv.budget.Held(); h != 0 {
		t.Fatalf("budget held %d after close", h)
	}
}

// TestASmallCopyFrameHoldsAtMostTwiceItsBudget: the budget counts a frame's
// payload length, so a copy frame of a few KiB (a dirty-region resync
// sends single 4 KiB grains) must not be read into a pooled 1 MiB buffer.
func TestASmallCopyFrameHoldsAtMostTwiceItsBudget(t *testing.T) {
	var wire bytes.Buffer
	f := Frame{Op: OpWrite, Flags: FlagCopy, ID: 1, Epoch: 1, Offset: 4096, Length: 4096, Payload: make([]byte, 4096)}
	f.WriteTo(&wire)
	var reserved int64
	got, err := readFrame(&wire, maxPayload, func(n int64) { reserved += n })
	if err != nil {
		t.Fatal(err)
	}
	if c := int64(cap(got.Payload)); c > 2*reserved {
		t.Errorf("budget reserved %d bytes for the frame, its buffer holds %d (%dx)", reserved, c, c/reserved)
	}
}
