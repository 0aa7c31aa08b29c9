package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
)

// guardSize is the number of guard bytes kept on each side of a
// memExport's data; a server that touched them wrote outside the export.
const guardSize = 4096

// guardByte fills the guards.
const guardByte = 0xEE

// errOutOfBounds is returned by memExport for calls the server should
// never make.
var errOutOfBounds = errors.New("memexport: call outside the export")

// memExport is an in-memory Export that records what the server asked of
// it. Calls outside [0, size) are recorded as violations, not served.
type memExport struct {
	mu   sync.Mutex
	buf  []byte // guard, data, guard
	size int64

	fail error // returned by every call when set

	// gate, when set, makes every call wait for a value (or for its
	// context) after announcing itself on entered.
	gate    chan struct{}
	entered chan string

	active     atomic.Int32
	reads      atomic.Int32
	writes     atomic.Int32
	fuaWrites  atomic.Int32
	flushes    atomic.Int32
	trims      atomic.Int32
	zeroes     atomic.Int32
	fuaZeroes  atomic.Int32
	cancelled  atomic.Int32
	violations atomic.Int32
}

// newMemExport returns a zeroed export of the given size.
func newMemExport(size int64) *memExport {
	buf := make([]byte, guardSize+size+guardSize)
	for i := range guardSize {
		buf[i] = guardByte
		buf[len(buf)-1-i] = guardByte
	}
	return &memExport{buf: buf, size: size}
}

// data returns a copy of the export's bytes.
func (m *memExport) data() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.buf[guardSize : guardSize+m.size])
}

// fill sets the export's bytes from p, starting at 0.
func (m *memExport) fill(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.buf[guardSize:guardSize+m.size], p)
}

// calls returns the number of calls that reached the export.
func (m *memExport) calls() int32 {
	return m.reads.Load() + m.writes.Load() + m.flushes.Load() + m.trims.Load() + m.zeroes.Load()
}

// checkIntact fails the test if the server touched anything outside the
// export or left a call running.
func (m *memExport) checkIntact(t testing.TB) {
	t.Helper()
	if n := m.violations.Load(); n != 0 {
		t.Errorf("export saw %d calls outside its bounds", n)
	}
	if n := m.active.Load(); n != 0 {
		t.Errorf("export has %d calls still running", n)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range guardSize {
		if m.buf[i] != guardByte || m.buf[len(m.buf)-1-i] != guardByte {
			t.Errorf("guard byte %d overwritten", i)
			return
		}
	}
}

// enter checks bounds and waits at the gate.
func (m *memExport) enter(ctx context.Context, op string, off, length int64) error {
	if off < 0 || length < 0 || off > m.size || length > m.size-off {
		m.violations.Add(1)
		return fmt.Errorf("%w: %s %d+%d", errOutOfBounds, op, off, length)
	}
	if m.gate != nil {
		m.entered <- op
		select {
		case <-m.gate:
		case <-ctx.Done():
			m.cancelled.Add(1)
			return ctx.Err()
		}
	}
	return m.fail
}

func (m *memExport) Size() int64 { return m.size }

func (m *memExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	m.reads.Add(1)
	if err := m.enter(ctx, "read", off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.buf[guardSize+off:])
	return nil
}

func (m *memExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	m.writes.Add(1)
	if fua {
		m.fuaWrites.Add(1)
	}
	if err := m.enter(ctx, "write", off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.buf[guardSize+off:], p)
	return nil
}

func (m *memExport) Flush(ctx context.Context) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	m.flushes.Add(1)
	return m.enter(ctx, "flush", 0, 0)
}

func (m *memExport) Trim(ctx context.Context, off, length int64) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	m.trims.Add(1)
	if err := m.enter(ctx, "trim", off, length); err != nil {
		return err
	}
	m.zero(off, length)
	return nil
}

func (m *memExport) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	m.active.Add(1)
	defer m.active.Add(-1)
	m.zeroes.Add(1)
	if fua {
		m.fuaZeroes.Add(1)
	}
	if err := m.enter(ctx, "zero", off, length); err != nil {
		return err
	}
	m.zero(off, length)
	return nil
}

// zero clears a checked range.
func (m *memExport) zero(off, length int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.buf[guardSize+off : guardSize+off+length])
}

// memExports is a fixed set of named exports; a name mapped to nil is
// refused by policy.
type memExports map[string]Export

func (e memExports) Lookup(name string) (Export, error) {
	exp, ok := e[name]
	switch {
	case !ok:
		return nil, ErrNoExport
	case exp == nil:
		return nil, ErrPolicy
	}
	return exp, nil
}

func (e memExports) List() []string {
	names := make([]string, 0, len(e))
	for name := range e {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
