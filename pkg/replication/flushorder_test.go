package replication

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// scriptedReplica speaks the replica side of the protocol on ip, and
// holds back its reply to every flush until release is closed.
type scriptedReplica struct {
	addr    string
	release chan struct{}
	flushes chan uint64 // ids of the flushes it received

	releaseOnce func() // closes release
}

func startScriptedReplica(t *testing.T, ip string) *scriptedReplica {
	t.Helper()
	lis, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptedReplica{addr: lis.Addr().String(), release: make(chan struct{}), flushes: make(chan uint64, 8)}
	var wg sync.WaitGroup
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() { close(s.release) })
		lis.Close()
		wg.Wait()
	})
	s.releaseOnce = func() { once.Do(func() { close(s.release) }) }
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var mu sync.Mutex
		reply := func(f Frame) {
			mu.Lock()
			defer mu.Unlock()
			f.WriteTo(c)
		}
		r := bufio.NewReader(c)
		for {
			f, err := ReadFrame(r)
			if err != nil {
				return
			}
			out := Frame{Op: OpReply, ID: f.ID, Epoch: f.Epoch, Status: StatusOK}
			switch f.Op {
			case OpHello:
				out.Offset = 42 // the incarnation
			case OpChecksum:
				out.Payload = make([]byte, 8) // a hole, like the primary's
			case OpFlush:
				s.flushes <- f.ID
				wg.Add(1)
				go func() {
					defer wg.Done()
					select {
					case <-s.release:
						reply(out)
					case <-time.After(time.Minute):
					}
				}()
				continue
			}
			reply(out)
		}
	}()
	return s
}

// TestAWriteReplyOvertakingAFlushKeepsTheFlushedRegionsMissed: a replica
// makes a flush durable off its apply loop, so the reply to a later write
// can arrive first. Until the flush's own reply, the regions written
// before it must still count as possibly missing on the replica, or a
// replica that dropped out then would resync without them.
func TestAWriteReplyOvertakingAFlushKeepsTheFlushedRegionsMissed(t *testing.T) {
	const size = 4 << 20
	a := startNode(t, "a", "zone-a", "127.0.0.1")
	fake := startScriptedReplica(t, "127.0.0.2")
	l := layoutOf(vol, size, 1, "a", a.info(InSync),
		ReplicaInfo{NodeID: "b", Zone: "zone-b", Address: fake.addr, State: InSync})
	p := startPrimary(t, a.create(t, vol, size), l, PrimaryOptions{NodeID: "a"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Let the new primary's verification of b finish first: a chunk it
	// copies would count as missed too.
	waitFor(t, "b verified", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.links["b"].verified.Load()
	})
	const before, after = 0, 2 << 20 // in distinct grains
	if err := p.WriteAt(ctx, make([]byte, 4096), before, false); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- p.Flush(ctx) }()
	select {
	case <-fake.flushes:
	case <-ctx.Done():
		t.Fatal("the flush never reached the replica")
	}
	if err := p.WriteAt(ctx, make([]byte, 4096), after, false); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-flushed:
		t.Fatalf("the flush returned (%v) before the replica answered it", err)
	default:
	}
	missed := func() (beforeMissed, afterMissed bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		m := p.links["b"].missedLocked()
		_, beforeMissed = m.grains[before/regionGrain]
		_, afterMissed = m.grains[after/regionGrain]
		return
	}
	if b, a := missed(); !b || !a {
		t.Fatalf("with the flush unanswered: region before it missed %v, after it %v; want both", b, a)
	}
	fake.releaseOnce()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if b, a := missed(); b || !a {
		t.Fatalf("after the flush's reply: region before it missed %v, after it %v; want only the one after", b, a)
	}
}
