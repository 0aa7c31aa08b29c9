package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
	"github.com/trireme-csi/trireme/pkg/nbd"
)

const (
	exportName = "vol-1"
	exportSize = 8 << 20
)

// dial connects a client to srv and closes it when the test ends.
func dial(t *testing.T, srv *testServer, retry time.Duration) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, Options{Endpoint: srv.endpoint, ExportName: exportName, RetryTimeout: retry})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pattern returns n bytes that differ with seed and position.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>12)
	}
	return b
}

func TestCommandsReachTheExport(t *testing.T) {
	exp := newMemExport(exportSize)
	c := dial(t, startServer(t, exports{exportName: exp}), 5*time.Second)
	ctx := context.Background()
	if got := c.Size(); got != exportSize {
		t.Fatalf("Size = %d, want %d", got, exportSize)
	}

	data := pattern(3<<20, 1)
	if err := c.WriteAt(ctx, data, 4096+1, true); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	if got := exp.bytes(4096+1, len(data)); !bytes.Equal(got, data) {
		t.Fatal("export does not hold the written bytes")
	}
	got := make([]byte, len(data))
	if err := c.ReadAt(ctx, got, 4096+1); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt: err %v, bytes equal %v", err, bytes.Equal(got, data))
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := c.WriteZeroes(ctx, 8192, 4096, false); err != nil {
		t.Fatalf("WriteZeroes: %v", err)
	}
	if err := c.Trim(ctx, 1<<20, 1<<20); err != nil {
		t.Fatalf("Trim: %v", err)
	}
	if !bytes.Equal(exp.bytes(8192, 4096), make([]byte, 4096)) {
		t.Fatal("WriteZeroes range does not read as zeroes")
	}
	if exp.fua.Load() != 1 || exp.flushes.Load() != 1 {
		t.Fatalf("export saw %d FUA writes and %d flushes, want 1 and 1", exp.fua.Load(), exp.flushes.Load())
	}
}

func TestManyRequestsInFlightOnOneConnection(t *testing.T) {
	exp := newMemExport(exportSize)
	c := dial(t, startServer(t, exports{exportName: exp}), 5*time.Second)
	const writers, size = 32, 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.WriteAt(context.Background(), pattern(size, byte(i)), int64(i*size), false)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("WriteAt: %v", err)
		}
	}
	for i := range writers {
		if !bytes.Equal(exp.bytes(i*size, size), pattern(size, byte(i))) {
			t.Fatalf("region %d holds the wrong bytes", i)
		}
	}
	if exp.maxActive.Load() < 2 {
		t.Fatalf("at most %d request reached the export at once, want concurrency", exp.maxActive.Load())
	}
}

func TestReconnectResendsWriteInFlight(t *testing.T) {
	exp := newMemExport(exportSize)
	exp.gate, exp.entered = make(chan struct{}), make(chan string, 16)
	srv := startServer(t, exports{exportName: exp})
	c := dial(t, srv, 20*time.Second)

	data := pattern(1<<20, 9)
	done := make(chan error, 1)
	go func() { done <- c.WriteAt(context.Background(), data, 1<<20, false) }()
	<-exp.entered
	srv.stop() // the write is in flight and unanswered
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("write returned %v while the server was down, want it to wait", err)
	default:
	}

	close(exp.gate)
	srv.start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write after reconnect: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write did not complete after the server came back")
	}
	if !bytes.Equal(exp.bytes(1<<20, len(data)), data) {
		t.Fatal("export does not hold the resent write")
	}
}

func TestEndpointIsResolvedOnEveryReconnection(t *testing.T) {
	first, second := newMemExport(exportSize), newMemExport(exportSize)
	a := startServer(t, exports{exportName: first})
	b := startServer(t, exports{exportName: second})
	var mu sync.Mutex
	target := a
	resolve := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return target.endpoint(ctx)
	}
	c, err := Dial(context.Background(), Options{Endpoint: resolve, ExportName: exportName, RetryTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()

	mu.Lock()
	target = b
	mu.Unlock()
	a.stop()
	if err := c.WriteAt(context.Background(), pattern(4096, 3), 0, false); err != nil {
		t.Fatalf("WriteAt after the move: %v", err)
	}
	if first.writes.Load() != 0 || second.writes.Load() != 1 {
		t.Fatalf("writes: old server %d, new server %d; want 0 and 1", first.writes.Load(), second.writes.Load())
	}
}

func TestRequestFailsAfterRetryTimeout(t *testing.T) {
	srv := startServer(t, exports{exportName: newMemExport(exportSize)})
	c := dial(t, srv, 500*time.Millisecond)
	srv.stop()

	start := time.Now()
	err := c.ReadAt(context.Background(), make([]byte, 4096), 0)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("ReadAt with the server gone = %v, want ErrTimeout", err)
	}
	if elapsed < 400*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("ReadAt failed after %v, want about 500ms", elapsed)
	}
}

func TestServerErrorsAreReturnedNotRetried(t *testing.T) {
	exp := newMemExport(exportSize)
	exp.fail = syscall.ENOSPC
	c := dial(t, startServer(t, exports{exportName: exp}), 5*time.Second)
	err := c.WriteAt(context.Background(), make([]byte, 4096), 0, false)
	var remote *RemoteError
	if !errors.As(err, &remote) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("WriteAt = %v, want a RemoteError with ENOSPC", err)
	}
	if got := exp.calls.Load(); got != 1 {
		t.Fatalf("export saw %d calls, want 1", got)
	}
}

func TestAbandonedReadDoesNotDisturbTheConnection(t *testing.T) {
	exp := newMemExport(exportSize)
	exp.gate, exp.entered = make(chan struct{}), make(chan string, 16)
	c := dial(t, startServer(t, exports{exportName: exp}), 5*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	buf := make([]byte, 64<<10)
	done := make(chan error, 1)
	go func() { done <- c.ReadAt(ctx, buf, 0) }()
	<-exp.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ReadAt = %v, want context.Canceled", err)
	}
	close(exp.gate) // the abandoned read's reply now arrives and is skipped

	data := pattern(4096, 5)
	if err := c.WriteAt(context.Background(), data, 0, false); err != nil {
		t.Fatalf("WriteAt after an abandoned read: %v", err)
	}
	got := make([]byte, 4096)
	if err := c.ReadAt(context.Background(), got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt after an abandoned read: err %v, equal %v", err, bytes.Equal(got, data))
	}
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Fatal("the abandoned read's buffer was written after it was given up")
	}
}

func TestInvalidRequests(t *testing.T) {
	c := dial(t, startServer(t, exports{exportName: newMemExport(exportSize)}), 5*time.Second)
	ctx := context.Background()
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"read past the end", c.ReadAt(ctx, make([]byte, 2), exportSize-1), ErrOutOfRange},
		{"negative offset", c.WriteAt(ctx, make([]byte, 1), -1, false), ErrOutOfRange},
		{"zeroes past the end", c.WriteZeroes(ctx, exportSize, 1, false), ErrOutOfRange},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

func TestDialErrors(t *testing.T) {
	srv := startServer(t, exports{exportName: newMemExport(exportSize)})
	tests := []struct {
		name string
		opts Options
		want []error
	}{
		{"no endpoint", Options{ExportName: exportName}, []error{ErrNoEndpoint}},
		{"unknown export", Options{Endpoint: srv.endpoint, ExportName: "nope", RetryTimeout: 300 * time.Millisecond},
			[]error{ErrTimeout, ErrUnknownExport}},
		{"resolver fails", Options{ExportName: exportName, RetryTimeout: 300 * time.Millisecond,
			Endpoint: func(context.Context) (string, error) { return "", fmt.Errorf("no primary") }},
			[]error{ErrTimeout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Dial(context.Background(), tt.opts)
			for _, want := range tt.want {
				if !errors.Is(err, want) {
					t.Errorf("Dial = %v, want it to match %v", err, want)
				}
			}
		})
	}
}

func TestCloseIsIdempotentAndFailsLaterRequests(t *testing.T) {
	c := dial(t, startServer(t, exports{exportName: newMemExport(exportSize)}), 5*time.Second)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.Flush(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Flush after Close = %v, want ErrClosed", err)
	}
}

// shuttingDownServer accepts one connection, negotiates an export of
// exportSize bytes and answers its first request with NBD_ESHUTDOWN, as
// a deposed primary should.
func shuttingDownServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		nc, err := lis.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		serveShutdown(nc)
	}()
	return lis.Addr().String()
}

// serveShutdown runs the fake server's side of one connection.
func serveShutdown(nc net.Conn) {
	be := binary.BigEndian
	greeting := be.AppendUint64(be.AppendUint64(nil, nbdwire.MagicInit), nbdwire.MagicOption)
	nc.Write(be.AppendUint16(greeting, nbdwire.FlagFixedNewstyle))
	var clientFlags [4]byte
	var opt [16]byte
	if _, err := io.ReadFull(nc, clientFlags[:]); err != nil {
		return
	}
	if _, err := io.ReadFull(nc, opt[:]); err != nil {
		return
	}
	io.CopyN(io.Discard, nc, int64(be.Uint32(opt[12:])))
	info := be.AppendUint64(be.AppendUint16(nil, nbdwire.InfoExport), exportSize)
	info = be.AppendUint16(info, nbdwire.TflagHasFlags|nbdwire.TflagSendFlush)
	nc.Write(append(optionReply(nbdwire.RepInfo, info), optionReply(nbdwire.RepAck, nil)...))
	var req [requestSize]byte
	if _, err := io.ReadFull(nc, req[:]); err != nil {
		return
	}
	rep := be.AppendUint32(be.AppendUint32(nil, nbdwire.MagicSimpleReply), errnoShutdown)
	nc.Write(append(rep, req[8:16]...))
}

// optionReply encodes a reply to NBD_OPT_GO.
func optionReply(typ uint32, data []byte) []byte {
	be := binary.BigEndian
	b := be.AppendUint64(nil, nbdwire.MagicOptionReply)
	b = be.AppendUint32(be.AppendUint32(b, nbdwire.OptGo), typ)
	return append(be.AppendUint32(b, uint32(len(data))), data...)
}

func TestShutdownReplyMovesTheRequestToTheNextServer(t *testing.T) {
	exp := newMemExport(exportSize)
	next := startServer(t, exports{exportName: exp})
	addrs := make(chan string, 2)
	addrs <- shuttingDownServer(t)
	resolve := func(ctx context.Context) (string, error) {
		select {
		case a := <-addrs:
			return a, nil
		default:
			return next.endpoint(ctx)
		}
	}
	c, err := Dial(context.Background(), Options{Endpoint: resolve, ExportName: exportName, RetryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if err := c.Flush(context.Background()); err != nil {
		t.Fatalf("Flush answered with NBD_ESHUTDOWN first: %v", err)
	}
	if got := exp.flushes.Load(); got != 1 {
		t.Fatalf("next server saw %d flushes, want 1", got)
	}
}

// refusingExports refuses every name by policy, as a primary refuses a
// client whose attachment a newer one fenced.
type refusingExports struct{}

func (refusingExports) Lookup(string) (nbd.Export, error) {
	return nil, fmt.Errorf("stale attachment: %w", nbd.ErrPolicy)
}

func (refusingExports) List() []string { return nil }

func TestRefusalByPolicyIsFinal(t *testing.T) {
	a := startServer(t, exports{exportName: newMemExport(exportSize)})
	b := startServer(t, refusingExports{})
	var mu sync.Mutex
	target := a
	resolve := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return target.endpoint(ctx)
	}
	c, err := Dial(context.Background(), Options{Endpoint: resolve, ExportName: exportName, RetryTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()

	mu.Lock()
	target = b
	mu.Unlock()
	a.stop()
	start := time.Now()
	if err := c.WriteAt(context.Background(), pattern(4096, 5), 0, false); !errors.Is(err, ErrForbidden) {
		t.Fatalf("WriteAt after the refusal = %v, want ErrForbidden", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("WriteAt failed after %v, want at once rather than at the 30s retry timeout", elapsed)
	}
	if err := c.ReadAt(context.Background(), make([]byte, 4096), 0); !errors.Is(err, ErrForbidden) {
		t.Errorf("ReadAt after the refusal = %v, want ErrForbidden", err)
	}
	if _, err := Dial(context.Background(), Options{Endpoint: b.endpoint, ExportName: exportName}); !errors.Is(err, ErrForbidden) {
		t.Errorf("Dial to the refusing server = %v, want ErrForbidden", err)
	}
}

// A server that hangs without closing (a stopped process) leaves requests
// waiting forever. Once the Endpoint names another server, the client
// leaves the hung one and the request completes there.
func TestStalledRequestMovesWhenTheExportMoves(t *testing.T) {
	hung, next := newMemExport(exportSize), newMemExport(exportSize)
	hung.gate, hung.entered = make(chan struct{}), make(chan string, 16)
	defer close(hung.gate)
	a := startServer(t, exports{exportName: hung})
	b := startServer(t, exports{exportName: next})
	var mu sync.Mutex
	target := a
	resolve := func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return target.endpoint(ctx)
	}
	c, err := Dial(context.Background(), Options{Endpoint: resolve, ExportName: exportName,
		RetryTimeout: 20 * time.Second, StallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()

	done := make(chan error, 1)
	data := pattern(8192, 5)
	go func() { done <- c.WriteAt(context.Background(), data, 4096, false) }()
	<-hung.entered
	// Still served here: a slow request alone does not move the client.
	select {
	case err := <-done:
		t.Fatalf("write returned %v while its server hung", err)
	case <-time.After(600 * time.Millisecond):
	}
	mu.Lock()
	target = b
	mu.Unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write after the move: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write still waiting on the hung server after the export moved")
	}
	if !bytes.Equal(next.bytes(4096, len(data)), data) {
		t.Fatal("the new server does not hold the write")
	}
}
