package replication

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// testNode is one data server on its own loopback address.
type testNode struct {
	id, zone string
	dir      string
	addr     string
	lis      net.Listener
	srv      *Server

	mu       sync.Mutex
	replicas map[string]*blockstore.Replica
}

func (n *testNode) Replica(id string) (*blockstore.Replica, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.replicas[id]
	return r, ok
}

func startNode(t testing.TB, id, zone, ip string) *testNode {
	t.Helper()
	n := &testNode{id: id, zone: zone, dir: t.TempDir(), replicas: map[string]*blockstore.Replica{}}
	n.listen(t, ip+":0")
	t.Cleanup(n.stop)
	return n
}

func startNodeB(b *testing.B, id, ip string) *testNode { return startNode(b, id, "zone-"+id, ip) }

func (n *testNode) createB(b *testing.B, volume string, size int64) *blockstore.Replica {
	return n.create(b, volume, size)
}

func (n *testNode) listen(t testing.TB, addr string) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	n.lis, n.addr = lis, lis.Addr().String()
	n.srv = NewServer(n, ServerOptions{NodeID: n.id})
	go n.srv.Serve(lis)
}

func (n *testNode) stop() {
	if n.srv != nil {
		n.srv.Close()
		n.srv = nil
	}
}

func (n *testNode) create(t testing.TB, volume string, size int64) *blockstore.Replica {
	t.Helper()
	r, err := blockstore.Create(filepath.Join(n.dir, volume), volume, size)
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.replicas[volume] = r
	n.mu.Unlock()
	t.Cleanup(func() { r.Close() })
	return r
}

func (n *testNode) info(state ReplicaState) ReplicaInfo {
	return ReplicaInfo{NodeID: n.id, Zone: n.zone, Address: n.addr, State: state}
}

// threeZones starts nodes a, b and c on 127.0.0.1, .2 and .3.
func threeZones(t *testing.T) (a, b, c *testNode) {
	return startNode(t, "a", "zone-a", "127.0.0.1"),
		startNode(t, "b", "zone-b", "127.0.0.2"),
		startNode(t, "c", "zone-c", "127.0.0.3")
}

func layoutOf(volume string, size int64, epoch uint64, primary string, reps ...ReplicaInfo) Layout {
	return Layout{VolumeID: volume, Size: size, Epoch: epoch, Primary: primary, Replicas: reps}
}

func startPrimary(t *testing.T, store *blockstore.Replica, l Layout, opts PrimaryOptions) *Primary {
	t.Helper()
	if opts.Reporter == nil && opts.AckTimeout == 0 {
		// Nobody would answer a fault report, so a replica slow to
		// acknowledge on a loaded machine would hold writes forever: give
		// it time. Broken connections still fault at once.
		opts.AckTimeout = time.Minute
	}
	p, err := NewPrimary(store, l, opts)
	if err != nil {
		t.Fatalf("NewPrimary: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// testController plays the controller: it answers reports with a new
// layout, after an optional gate.
type testController struct {
	mu       sync.Mutex
	layout   Layout
	gate     chan struct{} // if non-nil, ReplicaFaulted waits for it
	syncGate chan struct{} // if non-nil, ReplicaSynced waits for it
	reports  chan string
}

func newTestController(l Layout) *testController {
	return &testController{layout: l, reports: make(chan string, 16)}
}

func (c *testController) ReplicaFaulted(ctx context.Context, volume string, epoch uint64, node string, cause error) (Layout, error) {
	c.reports <- "faulted:" + node
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return Layout{}, ctx.Err()
		}
	}
	return c.setState(node, Faulted), nil
}

func (c *testController) ReplicaSynced(ctx context.Context, volume string, epoch uint64, node string) (Layout, error) {
	c.reports <- "synced:" + node
	if c.syncGate != nil {
		select {
		case <-c.syncGate:
		case <-ctx.Done():
			return Layout{}, ctx.Err()
		}
	}
	return c.setState(node, InSync), nil
}

func (c *testController) setState(node string, st ReplicaState) Layout {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.layout
	l.Replicas = append([]ReplicaInfo(nil), l.Replicas...)
	for i := range l.Replicas {
		if l.Replicas[i].NodeID == node && l.Replicas[i].State != st {
			l.Replicas[i].State = st
			l.Epoch++
		}
	}
	c.layout = l
	return l
}

// model is what the client was acknowledged, byte for byte.
type model struct {
	mu   sync.Mutex
	data []byte
}

func (m *model) write(off int64, b []byte) {
	m.mu.Lock()
	copy(m.data[off:], b)
	m.mu.Unlock()
}

func (m *model) zero(off, n int64) {
	m.mu.Lock()
	clear(m.data[off : off+n])
	m.mu.Unlock()
}

// writer issues random unaligned writes, zeroes and flushes inside its own
// region, so the model of acknowledged data is exact. It stops between
// requests once stop is cancelled; requests themselves always finish, so
// the model never misses an applied write.
func writer(stop context.Context, p *Primary, m *model, seed uint64, regionOff, regionLen int64, ops int) error {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b9))
	for i := 0; i < ops && stop.Err() == nil; i++ {
		n := 1 + rng.Int64N(min(regionLen, 20000))
		off := regionOff + rng.Int64N(regionLen-n+1)
		switch k := rng.IntN(20); {
		case k == 0:
			if err := p.Flush(ctx); err != nil {
				return fmt.Errorf("flush: %w", err)
			}
		case k < 3:
			if err := p.WriteZeroes(ctx, off, n, k == 1); err != nil {
				return fmt.Errorf("zero %d+%d: %w", off, n, err)
			}
			m.zero(off, n)
		default:
			b := make([]byte, n)
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			if err := p.WriteAt(ctx, b, off, k == 3); err != nil {
				return fmt.Errorf("write %d+%d: %w", off, n, err)
			}
			m.write(off, b)
		}
	}
	return nil
}

func runWriters(ctx context.Context, p *Primary, m *model, n int, ops int) error {
	size := int64(len(m.data))
	region := size / int64(n)
	errs := make(chan error, n)
	for w := 0; w < n; w++ {
		go func() { errs <- writer(ctx, p, m, uint64(w+1), int64(w)*region, region, ops) }()
	}
	var first error
	for w := 0; w < n; w++ {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// requireIdentical checks that each replica's data file equals want.
func requireIdentical(t *testing.T, want []byte, reps ...*blockstore.Replica) {
	t.Helper()
	for _, r := range reps {
		got, err := os.ReadFile(r.DataPath())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("replica %s differs from the acknowledged data at byte %d", r.Dir(), firstDiff(got, want))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
