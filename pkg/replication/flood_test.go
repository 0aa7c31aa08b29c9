package replication

// A flood of connections that never send their hello, and a slowloris
// trickling one a byte a second, must not keep primaries off a replica.
// The test logs the latency a primary's connection sees before and
// during the flood and asserts only that it is served.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// startLimitedNode starts a data server on 127.0.0.1 with the given
// options and one replica of vol at epoch 5.
func startLimitedNode(t *testing.T, opts ServerOptions) *testNode {
	t.Helper()
	n := &testNode{id: "a", zone: "zone-a", dir: t.TempDir(), replicas: map[string]*blockstore.Replica{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.NodeID = n.id
	n.lis, n.addr, n.srv = lis, lis.Addr().String(), NewServer(n, opts)
	go n.srv.Serve(lis)
	t.Cleanup(n.stop)
	if err := n.create(t, vol, 1<<20).ObserveEpoch(5); err != nil {
		t.Fatal(err)
	}
	return n
}

// floodIdle holds count connections to addr open without a hello, from
// the source addresses src gives, redialling a second after the server
// closes one, until the returned stop is called.
func floodIdle(addr string, count int, src func(i int) net.IP) (dials func() int, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	for i := 0; i < count; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src(i)}}
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", addr)
				mu.Lock()
				n++
				mu.Unlock()
				if err == nil {
					stop := context.AfterFunc(ctx, func() { c.Close() })
					io.Copy(io.Discard, c)
					stop()
					c.Close()
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	dials = func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	for dials() < count && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return dials, func() { cancel(); wg.Wait() }
}

// trickleHello sends a hello one byte a second and reports how long the
// server kept the connection open.
func trickleHello(addr string, src net.IP, result chan<- time.Duration) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		result <- 0
		return
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, c)
		closed <- time.Since(start)
	}()
	var b []byte
	b, _ = appendFrame(b, hello(5))
	for _, x := range b {
		if _, err := c.Write([]byte{x}); err != nil {
			break
		}
		select {
		case d := <-closed:
			result <- d
			return
		case <-time.After(time.Second):
		}
	}
	result <- <-closed
}

// appendFrame encodes f after b.
func appendFrame(b []byte, f Frame) ([]byte, error) {
	var buf bytesWriter
	buf.b = b
	_, err := f.WriteTo(&buf)
	return buf.b, err
}

type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

// tryBind opens a connection as a primary would, binds it to vol and
// writes 4 KiB.
func tryBind(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	for _, f := range []Frame{hello(5), {Op: OpWrite, ID: 2, Epoch: 5, Length: 4096, Payload: make([]byte, 4096)}} {
		if _, err := f.WriteTo(c); err != nil {
			return err
		}
		reply, err := ReadFrame(r)
		if err != nil {
			return fmt.Errorf("op %d: %w", f.Op, err)
		}
		if reply.Status != StatusOK {
			return fmt.Errorf("op %d: status %d", f.Op, reply.Status)
		}
	}
	return nil
}

// replicaLatencies measures n new bound connections (retried until one
// attempt works, counting the failures) and n writes on a connection
// bound before.
func replicaLatencies(t *testing.T, n *testNode, open net.Conn, rd *bufio.Reader, rounds int) (binds, writes []time.Duration, failed int) {
	t.Helper()
	for i := 0; i < rounds; i++ {
		start := time.Now()
		var err error
		for attempt := 0; attempt < 20; attempt++ {
			if err = tryBind(n.addr); err == nil {
				break
			}
			failed++
		}
		if err != nil {
			t.Fatalf("no connection bound in 20 attempts: %v", err)
		}
		binds = append(binds, time.Since(start))

		start = time.Now()
		open.SetDeadline(time.Now().Add(10 * time.Second))
		w := Frame{Op: OpWrite, ID: uint64(100 + i), Epoch: 5, Offset: 4096, Length: 4096, Payload: make([]byte, 4096)}
		if st := roundTrip(t, open, rd, w).Status; st != StatusOK {
			t.Fatalf("write on the open connection: status %d", st)
		}
		writes = append(writes, time.Since(start))
	}
	return binds, writes, failed
}

// summary gives the count, median and 99th percentile of durations.
func summary(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(s), s[len(s)/2], s[len(s)*99/100], s[len(s)-1])
}

func TestFloodOfIdleConnectionsDoesNotKeepPrimariesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a thousand connections")
	}
	tests := []struct {
		name string
		opts ServerOptions
		src  func(i int) net.IP
	}{
		{"from one address, per-address limit", ServerOptions{MaxConnsPerIP: 32, MaxUnbound: 256},
			func(int) net.IP { return net.IPv4(127, 0, 0, 2) }},
		{"from a thousand addresses, unbound limit", ServerOptions{MaxConnsPerIP: 32, MaxUnbound: 256},
			func(i int) net.IP { return net.IPv4(127, 0, 1+byte(i/250), 1+byte(i%250)) }},
		{"no limits", ServerOptions{}, func(int) net.IP { return net.IPv4(127, 0, 0, 2) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.HelloTimeout = 3 * time.Second
			n := startLimitedNode(t, opts)
			open, rd := dialRaw(t, n)
			if st := roundTrip(t, open, rd, hello(5)).Status; st != StatusOK {
				t.Fatalf("hello: status %d", st)
			}
			const rounds = 50
			binds, writes, failed := replicaLatencies(t, n, open, rd, rounds)
			t.Logf("before the flood: new bound connection %s (%d failed attempts); write on a bound connection %s",
				summary(binds), failed, summary(writes))

			slow := make(chan time.Duration, 1)
			go trickleHello(n.addr, net.IPv4(127, 0, 0, 3), slow)
			dials, stop := floodIdle(n.addr, 1000, tt.src)
			defer stop()
			binds, writes, failed = replicaLatencies(t, n, open, rd, rounds)
			t.Logf("during the flood (%d dials): new bound connection %s (%d failed attempts); write on a bound connection %s",
				dials(), summary(binds), failed, summary(writes))
			select {
			case d := <-slow:
				if d > opts.HelloTimeout+5*time.Second {
					t.Errorf("slowloris held its connection for %v, hello timeout %v", d, opts.HelloTimeout)
				}
				t.Logf("slowloris cut off after %v", d.Round(time.Millisecond))
			case <-time.After(opts.HelloTimeout + 10*time.Second):
				t.Errorf("slowloris still connected after %v", opts.HelloTimeout+10*time.Second)
			}
		})
	}
}

func TestPerAddressLimitRefusesExtraReplicationConnections(t *testing.T) {
	n := startLimitedNode(t, ServerOptions{MaxConnsPerIP: 1})
	held, rd := dialRaw(t, n)
	if st := roundTrip(t, held, rd, hello(5)).Status; st != StatusOK {
		t.Fatalf("hello: status %d", st)
	}
	extra, extraRd := dialRaw(t, n)
	f := hello(5)
	f.WriteTo(extra) // may fail: the server closes the connection at once
	if _, err := ReadFrame(extraRd); err == nil {
		t.Fatal("a second connection from the address was served")
	}
	held.Close()
	waitFor(t, "a connection admitted after the first closed", func() bool { return tryBind(n.addr) == nil })
}

func TestUnboundLimitClosesTheOldestIdleConnection(t *testing.T) {
	n := startLimitedNode(t, ServerOptions{MaxUnbound: 1})
	idle, idleRd := dialRaw(t, n)
	waitFor(t, "the idle connection counted", func() bool {
		n.srv.mu.Lock()
		defer n.srv.mu.Unlock()
		return n.srv.unbound.Len() == 1
	})
	if err := tryBind(n.addr); err != nil {
		t.Fatalf("a primary was kept out by an idle connection: %v", err)
	}
	if _, err := idleRd.ReadByte(); err == nil {
		t.Error("the idle connection was not closed")
	}
	idle.Close()
}

func TestHelloTimeoutBoundsATricklingPeer(t *testing.T) {
	n := startLimitedNode(t, ServerOptions{HelloTimeout: 300 * time.Millisecond})
	c, rd := dialRaw(t, n)
	b, _ := appendFrame(nil, hello(5))
	start := time.Now()
	go func() {
		for _, x := range b { // a byte every 20ms: about 1.5s in all
			if _, err := c.Write([]byte{x}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if _, err := ReadFrame(rd); err == nil {
		t.Fatal("a hello trickled over longer than the hello timeout was answered")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a trickling peer held its connection for %v, hello timeout 300ms", d)
	}
}
