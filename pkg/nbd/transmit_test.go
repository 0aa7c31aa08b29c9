package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// connected starts a server for one export and returns a client in
// transmission.
func connected(t *testing.T, exp *memExport, opts Options) *testClient {
	t.Helper()
	addr, _ := startServer(t, memExports{"vol": exp}, opts)
	c := dial(t, addr)
	c.connect("vol")
	return c
}

// pattern returns n bytes of a recognisable, position-dependent pattern.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i%251)
	}
	return b
}

func TestWriteThenReadBack(t *testing.T) {
	exp := newMemExport(testSize)
	c := connected(t, exp, Options{})
	data := pattern(8192, 3)
	c.send(nbdwire.CmdWrite, 0, 10, 4096, uint32(len(data)), data)
	c.expectReply(10, 0)
	if got := c.readAt(11, 4096, 8192); !bytes.Equal(got, data) {
		t.Errorf("read back differs from written data")
	}
	want := make([]byte, testSize)
	copy(want[4096:], data)
	if !bytes.Equal(exp.data(), want) {
		t.Errorf("export bytes differ from the one write")
	}
	exp.checkIntact(t)
}

func TestCommandsReachExport(t *testing.T) {
	tests := []struct {
		name    string
		typ     uint16
		flags   uint16
		off     uint64
		length  uint32
		payload []byte
		check   func(t *testing.T, exp *memExport)
	}{
		{"write", nbdwire.CmdWrite, 0, 0, 4, []byte("abcd"), func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "writes", exp.writes.Load(), 1, "fua", exp.fuaWrites.Load(), 0)
			expectPrefix(t, exp, "abcd\xAA")
		}},
		{"write FUA", nbdwire.CmdWrite, nbdwire.CmdFlagFUA, 1, 2, []byte("xy"), func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "writes", exp.writes.Load(), 1, "fua", exp.fuaWrites.Load(), 1)
			expectPrefix(t, exp, "\xAAxy\xAA")
		}},
		{"flush", nbdwire.CmdFlush, 0, 0, 0, nil, func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "flushes", exp.flushes.Load(), 1, "calls", exp.calls(), 1)
		}},
		{"trim", nbdwire.CmdTrim, 0, 1, 2, nil, func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "trims", exp.trims.Load(), 1, "flushes", exp.flushes.Load(), 0)
			expectPrefix(t, exp, "\xAA\x00\x00\xAA")
		}},
		{"trim FUA flushes", nbdwire.CmdTrim, nbdwire.CmdFlagFUA, 1, 2, nil, func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "trims", exp.trims.Load(), 1, "flushes", exp.flushes.Load(), 1)
		}},
		{"write zeroes", nbdwire.CmdWriteZeroes, 0, 2, 3, nil, func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "zeroes", exp.zeroes.Load(), 1, "fua", exp.fuaZeroes.Load(), 0)
			expectPrefix(t, exp, "\xAA\xAA\x00\x00\x00\xAA")
		}},
		{"write zeroes FUA NO_HOLE", nbdwire.CmdWriteZeroes, nbdwire.CmdFlagFUA | cmdFlagNoHole, 0, 1, nil, func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "zeroes", exp.zeroes.Load(), 1, "fua", exp.fuaZeroes.Load(), 1)
			expectPrefix(t, exp, "\x00\xAA")
		}},
		{"read FUA is a plain read", nbdwire.CmdRead, nbdwire.CmdFlagFUA, 0, 1, nil, func(t *testing.T, exp *memExport) {
			expectCounts(t, exp, "reads", exp.reads.Load(), 1, "calls", exp.calls(), 1)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := newMemExport(testSize)
			exp.fill(bytes.Repeat([]byte{0xAA}, 16))
			c := connected(t, exp, Options{})
			c.send(tt.typ, tt.flags, 7, tt.off, tt.length, tt.payload)
			c.expectReply(7, 0)
			if tt.typ == nbdwire.CmdRead {
				c.read(int(tt.length))
			}
			tt.check(t, exp)
			exp.checkIntact(t)
		})
	}
}

// expectCounts compares pairs of (name, got, want) counters.
func expectCounts(t *testing.T, _ *memExport, kv ...any) {
	t.Helper()
	for i := 0; i < len(kv); i += 3 {
		if got, want := fmt.Sprint(kv[i+1]), fmt.Sprint(kv[i+2]); got != want {
			t.Errorf("%s = %s, want %s", kv[i], got, want)
		}
	}
}

// expectPrefix checks the first bytes of the export.
func expectPrefix(t *testing.T, exp *memExport, want string) {
	t.Helper()
	if got := exp.data()[:len(want)]; string(got) != want {
		t.Errorf("export starts %q, want %q", got, want)
	}
}

func TestBadRequestsGetErrorAndLeaveExportAlone(t *testing.T) {
	tests := []struct {
		name    string
		typ     uint16
		flags   uint16
		off     uint64
		length  uint32
		payload []byte
		want    uint32
	}{
		{"read past end", nbdwire.CmdRead, 0, testSize - 512, 1024, nil, errnoInval},
		{"read beyond end", nbdwire.CmdRead, 0, testSize + 1, 1, nil, errnoInval},
		{"read offset overflows", nbdwire.CmdRead, 0, 1<<64 - 1, 2, nil, errnoInval},
		{"write past end", nbdwire.CmdWrite, 0, testSize - 2, 4, []byte("abcd"), errnoNoSpace},
		{"write zeroes past end", nbdwire.CmdWriteZeroes, 0, testSize, 512, nil, errnoNoSpace},
		{"trim past end", nbdwire.CmdTrim, 0, testSize - 1, 2, nil, errnoInval},
		{"zero length read", nbdwire.CmdRead, 0, 0, 0, nil, errnoInval},
		{"zero length write", nbdwire.CmdWrite, 0, 0, 0, nil, errnoInval},
		{"zero length trim", nbdwire.CmdTrim, 0, 0, 0, nil, errnoInval},
		{"zero length write zeroes", nbdwire.CmdWriteZeroes, 0, 0, 0, nil, errnoInval},
		{"read over max block size", nbdwire.CmdRead, 0, 0, MaxBlockSize + 1, nil, errnoInval},
		{"write zeroes over max block size", nbdwire.CmdWriteZeroes, 0, 0, MaxBlockSize + 1, nil, errnoInval},
		{"unknown command", 0x55, 0, 0, 1, nil, errnoInval},
		{"cache", cmdCache, 0, 0, 1, nil, errnoInval},
		{"block status", 7, 0, 0, 1, nil, errnoInval},
		{"unknown flag", nbdwire.CmdRead, 1 << 9, 0, 1, nil, errnoInval},
		{"NO_HOLE on write", nbdwire.CmdWrite, cmdFlagNoHole, 0, 3, []byte("abc"), errnoInval},
		{"DF on read", nbdwire.CmdRead, cmdFlagDF, 0, 1, nil, errnoInval},
		{"FAST_ZERO", nbdwire.CmdWriteZeroes, cmdFlagFastZero, 0, 1, nil, errnoInval},
		{"flush with offset", nbdwire.CmdFlush, 0, 512, 0, nil, errnoInval},
		{"flush with length", nbdwire.CmdFlush, 0, 0, 512, nil, errnoInval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := newMemExport(testSize)
			before := pattern(testSize, 1)
			exp.fill(before)
			c := connected(t, exp, Options{})
			c.send(tt.typ, tt.flags, 99, tt.off, tt.length, tt.payload)
			c.expectReply(99, tt.want)
			if n := exp.calls(); n != 0 {
				t.Errorf("export saw %d calls, want 0", n)
			}
			// The connection stays usable and in sync.
			if got := c.readAt(100, 0, 4); !bytes.Equal(got, before[:4]) {
				t.Errorf("read after refusal %x, want %x", got, before[:4])
			}
			if !bytes.Equal(exp.data(), before) {
				t.Errorf("export data changed")
			}
			exp.checkIntact(t)
		})
	}
}

func TestTrimLongerThanMaxBlockSize(t *testing.T) {
	const size = MaxBlockSize + 1<<20
	exp := newMemExport(size)
	exp.fill(bytes.Repeat([]byte{1}, size))
	c := connected(t, exp, Options{})
	c.send(nbdwire.CmdTrim, 0, 1, 0, size, nil)
	c.expectReply(1, 0)
	if !bytes.Equal(exp.data(), make([]byte, size)) {
		t.Errorf("trimmed export does not read as zeroes")
	}
}

func TestOversizedWriteRepliesThenCloses(t *testing.T) {
	exp := newMemExport(testSize)
	s := NewServer(memExports{"vol": exp}, Options{})
	c, done := servePair(t, s)
	c.connect("vol")
	c.send(nbdwire.CmdWrite, 0, 5, 0, MaxBlockSize+1, []byte("not a real payload"))
	c.expectReply(5, errnoInval)
	c.expectClosed()
	if err := waitServeConn(t, done); !errors.Is(err, errWriteTooLarge) {
		t.Errorf("ServeConn = %v, want errWriteTooLarge", err)
	}
	if n := exp.calls(); n != 0 {
		t.Errorf("export saw %d calls, want 0", n)
	}
	exp.checkIntact(t)
}

func TestBadRequestMagicCloses(t *testing.T) {
	exp := newMemExport(testSize)
	c, done := servePair(t, NewServer(memExports{"vol": exp}, Options{}))
	c.connect("vol")
	c.write(bytes.Repeat([]byte{0x42}, requestSize))
	c.expectClosed()
	if err := waitServeConn(t, done); !errors.Is(err, errBadRequestMagic) {
		t.Errorf("ServeConn = %v, want errBadRequestMagic", err)
	}
}

func TestTruncatedFramesCloseCleanly(t *testing.T) {
	write := requestBytes(nbdwire.CmdWrite, 0, 1, 0, 4096)
	tests := []struct {
		name string
		send []byte
		want error
	}{
		{"nothing after GO", nil, errClientDisconnected},
		{"half a request header", write[:13], errTruncated},
		{"write header without payload", write, errTruncated},
		{"write with half its payload", append(bytes.Clone(write), make([]byte, 2048)...), errTruncated},
		{"refused write with half its payload", append(requestBytes(nbdwire.CmdWrite, 0, 1, testSize, 4096), make([]byte, 10)...), errTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := newMemExport(testSize)
			goroutines := runtime.NumGoroutine()
			c, done := servePair(t, NewServer(memExports{"vol": exp}, Options{}))
			c.connect("vol")
			c.write(tt.send)
			c.nc.Close()
			if err := waitServeConn(t, done); !errors.Is(err, tt.want) {
				t.Errorf("ServeConn = %v, want %v", err, tt.want)
			}
			if n := exp.calls(); n != 0 {
				t.Errorf("export saw %d calls, want 0", n)
			}
			exp.checkIntact(t)
			expectGoroutines(t, goroutines)
		})
	}
}

// expectGoroutines waits for the goroutine count to fall back to n.
func expectGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gated returns an export whose calls block until released.
func gated(size int64) *memExport {
	exp := newMemExport(size)
	exp.gate = make(chan struct{})
	exp.entered = make(chan string, 1024)
	return exp
}

// waitEntered waits for n calls to reach the export's gate.
func waitEntered(t *testing.T, exp *memExport, n int) {
	t.Helper()
	for range n {
		select {
		case <-exp.entered:
		case <-time.After(ioTimeout):
			t.Fatal("export call did not arrive")
		}
	}
}

func TestAbruptDisconnectCancelsInFlightRequests(t *testing.T) {
	exp := gated(testSize)
	goroutines := runtime.NumGoroutine()
	c, done := servePair(t, NewServer(memExports{"vol": exp}, Options{}))
	c.connect("vol")
	c.send(nbdwire.CmdRead, 0, 1, 0, 512, nil)
	c.send(nbdwire.CmdWrite, 0, 2, 0, 3, []byte("abc"))
	waitEntered(t, exp, 2)
	c.nc.Close()
	if err := waitServeConn(t, done); !errors.Is(err, errHungUpInFlight) {
		t.Errorf("ServeConn = %v, want errHungUpInFlight", err)
	}
	if n := exp.cancelled.Load(); n != 2 {
		t.Errorf("%d export calls saw their context cancelled, want 2", n)
	}
	exp.checkIntact(t)
	expectGoroutines(t, goroutines)
}

// slowStart is an export whose reads at offset 0 wait for release.
type slowStart struct {
	*memExport
	release chan struct{}
}

func (s slowStart) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off == 0 {
		<-s.release
	}
	return s.memExport.ReadAt(ctx, p, off)
}

func TestRepliesFollowCompletionOrder(t *testing.T) {
	exp := slowStart{newMemExport(testSize), make(chan struct{})}
	exp.fill([]byte("first second"))
	addr, _ := startServer(t, memExports{"vol": exp}, Options{})
	c := dial(t, addr)
	c.connect("vol")
	c.send(nbdwire.CmdRead, 0, 1, 0, 5, nil)
	c.send(nbdwire.CmdRead, 0, 2, 6, 6, nil)
	c.expectReply(2, 0)
	if got := string(c.read(6)); got != "second" {
		t.Errorf("handle 2 data %q, want second", got)
	}
	close(exp.release)
	c.expectReply(1, 0)
	if got := string(c.read(5)); got != "first" {
		t.Errorf("handle 1 data %q, want first", got)
	}
}

func TestRequestsRunConcurrentlyUpToLimit(t *testing.T) {
	exp := gated(testSize)
	c := connected(t, exp, Options{MaxInFlight: 4})
	for h := range uint64(6) {
		c.send(nbdwire.CmdRead, 0, h, h*512, 512, nil)
	}
	waitEntered(t, exp, 4)
	select {
	case op := <-exp.entered:
		t.Fatalf("fifth request (%s) started while four were in flight", op)
	case <-time.After(100 * time.Millisecond):
	}
	if n := exp.active.Load(); n != 4 {
		t.Errorf("%d export calls active, want 4", n)
	}
	close(exp.gate)
	seen := map[uint64]bool{}
	for range 6 {
		errno, h := c.readReply()
		if errno != 0 || seen[h] || h >= 6 {
			t.Fatalf("reply (errno %d, handle %d) unexpected; seen %v", errno, h, seen)
		}
		seen[h] = true
		c.read(512)
	}
}

func TestInFlightBytesBound(t *testing.T) {
	exp := gated(testSize)
	c := connected(t, exp, Options{MaxInFlightBytes: 8192})
	for h := range uint64(3) {
		c.send(nbdwire.CmdRead, 0, h, 0, 4096, nil)
	}
	waitEntered(t, exp, 2)
	select {
	case <-exp.entered:
		t.Fatal("third 4 KiB read started with 8 KiB already in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(exp.gate)
	for range 3 {
		c.readReply()
		c.read(4096)
	}
}

func TestDisconnectAnswersInFlightRequestsFirst(t *testing.T) {
	exp := gated(testSize)
	c, done := servePair(t, NewServer(memExports{"vol": exp}, Options{}))
	c.connect("vol")
	c.send(nbdwire.CmdWrite, nbdwire.CmdFlagFUA, 1, 0, 3, []byte("abc"))
	waitEntered(t, exp, 1)
	c.send(nbdwire.CmdDisc, 0, 2, 0, 0, nil)
	select {
	case err := <-done:
		t.Fatalf("ServeConn returned %v with a write in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(exp.gate)
	c.expectReply(1, 0)
	c.expectClosed()
	if err := waitServeConn(t, done); err != nil {
		t.Errorf("ServeConn = %v, want nil", err)
	}
	expectPrefix(t, exp, "abc")
}

func TestExportErrorsMapToErrno(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want uint32
	}{
		{"plain error", errors.New("replica lost"), errnoIO},
		{"deadline", context.DeadlineExceeded, errnoIO},
		{"no space", fmt.Errorf("allocate: %w", ErrNoSpace), errnoNoSpace},
		{"ENOSPC", syscall.ENOSPC, errnoNoSpace},
		{"read-only", ErrReadOnly, errnoPerm},
		{"EROFS", syscall.EROFS, errnoPerm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp := newMemExport(testSize)
			exp.fail = tt.err
			c := connected(t, exp, Options{})
			c.send(nbdwire.CmdWrite, 0, 1, 0, 2, []byte("ab"))
			c.expectReply(1, tt.want)
			c.send(nbdwire.CmdRead, 0, 2, 0, 2, nil)
			c.expectReply(2, tt.want) // no data follows a failed read
			c.send(nbdwire.CmdFlush, 0, 3, 0, 0, nil)
			c.expectReply(3, tt.want)
		})
	}
}

func TestCloseEndsConnectionsAndServe(t *testing.T) {
	exp := gated(testSize)
	s := NewServer(memExports{"vol": exp}, Options{})
	c, done := servePair(t, s)
	c.connect("vol")
	c.send(nbdwire.CmdRead, 0, 1, 0, 512, nil)
	waitEntered(t, exp, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(ioTimeout):
		t.Fatal("Close did not return")
	}
	if err := waitServeConn(t, done); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeConn = %v, want ErrServerClosed", err)
	}
	if n := exp.cancelled.Load(); n != 1 {
		t.Errorf("%d calls cancelled, want 1", n)
	}
	c.expectClosed()
	if err := s.ServeConn(c.nc); !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeConn after Close = %v, want ErrServerClosed", err)
	}
}

func TestMultipleConnectionsShareExport(t *testing.T) {
	exp := newMemExport(testSize)
	addr, _ := startServer(t, memExports{"vol": exp}, Options{})
	a, b := dial(t, addr), dial(t, addr)
	a.connect("vol")
	b.connect("vol")
	a.send(nbdwire.CmdWrite, 0, 1, 100, 5, []byte("hello"))
	a.expectReply(1, 0)
	a.send(nbdwire.CmdFlush, 0, 2, 0, 0, nil)
	a.expectReply(2, 0)
	if got := b.readAt(1, 100, 5); string(got) != "hello" {
		t.Errorf("second connection read %q, want hello", got)
	}
}
