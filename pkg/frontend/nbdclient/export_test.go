package nbdclient

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/nbd"
)

// memExport is an in-memory nbd.Export that counts what reached it. When
// gate is set, every call announces itself on entered and waits for gate
// (or for its context).
type memExport struct {
	mu   sync.Mutex
	data []byte
	fail error

	gate    chan struct{}
	entered chan string

	calls, writes, fua, flushes atomic.Int32
	active, maxActive           atomic.Int32
}

func newMemExport(size int) *memExport { return &memExport{data: make([]byte, size)} }

// enter counts a call and waits at the gate.
func (m *memExport) enter(ctx context.Context, op string) (func(), error) {
	m.calls.Add(1)
	n := m.active.Add(1)
	for {
		old := m.maxActive.Load()
		if n <= old || m.maxActive.CompareAndSwap(old, n) {
			break
		}
	}
	leave := func() { m.active.Add(-1) }
	if m.gate != nil {
		m.entered <- op
		select {
		case <-m.gate:
		case <-ctx.Done():
			leave()
			return nil, ctx.Err()
		}
	}
	if m.fail != nil {
		leave()
		return nil, m.fail
	}
	return leave, nil
}

func (m *memExport) Size() int64 { return int64(len(m.data)) }

func (m *memExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	leave, err := m.enter(ctx, "read")
	if err != nil {
		return err
	}
	defer leave()
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.data[off:])
	return nil
}

func (m *memExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	leave, err := m.enter(ctx, "write")
	if err != nil {
		return err
	}
	defer leave()
	m.writes.Add(1)
	if fua {
		m.fua.Add(1)
	}
	// Slow writes down a little so concurrent requests overlap.
	time.Sleep(time.Millisecond)
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	return nil
}

func (m *memExport) Flush(ctx context.Context) error {
	leave, err := m.enter(ctx, "flush")
	if err != nil {
		return err
	}
	defer leave()
	m.flushes.Add(1)
	return nil
}

func (m *memExport) Trim(ctx context.Context, off, length int64) error {
	return m.WriteZeroes(ctx, off, length, false)
}

func (m *memExport) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	leave, err := m.enter(ctx, "zero")
	if err != nil {
		return err
	}
	defer leave()
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+length])
	return nil
}

// bytes returns a copy of the export's data.
func (m *memExport) bytes(off, n int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data[off : off+n])
}

// exports serves fixed exports by name.
type exports map[string]nbd.Export

func (e exports) Lookup(name string) (nbd.Export, error) {
	if x, ok := e[name]; ok {
		return x, nil
	}
	return nil, nbd.ErrNoExport
}

func (e exports) List() []string { return nil }

// testServer is an nbd.Server on a 127.0.0.1 port that can be stopped
// and started again on the same address.
type testServer struct {
	t       *testing.T
	exports nbd.Exports
	addr    string

	mu  sync.Mutex
	srv *nbd.Server
}

// startServer serves exps on a random 127.0.0.1 port.
func startServer(t *testing.T, exps nbd.Exports) *testServer {
	t.Helper()
	s := &testServer{t: t, exports: exps, addr: "127.0.0.1:0"}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start listens on s.addr and serves.
func (s *testServer) start() {
	s.t.Helper()
	addr, _ := s.endpoint(context.Background())
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		s.t.Fatalf("listen on %s: %v", addr, err)
	}
	srv := nbd.NewServer(s.exports, nbd.Options{})
	s.mu.Lock()
	s.addr = lis.Addr().String()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(lis)
}

// stop closes the listener and every connection.
func (s *testServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// endpoint resolves to the server's current address.
func (s *testServer) endpoint(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr, nil
}
