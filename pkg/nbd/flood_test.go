package nbd

// Tests that a flood of connections that never finish negotiating, and a
// slowloris client trickling a byte a second, neither starve a client
// that negotiates properly nor outlive the handshake deadline. They log
// the legitimate client's latency before and during the flood; they
// assert only that it is served, since timings on a shared machine vary.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// floodConns is how many idle connections a flood holds open.
const floodConns = 1000

// flood holds connections to addr open without negotiating, from the
// source addresses src returns for each connection, redialling one a
// second after the server closes it, until stop is called.
type flood struct {
	addr    string
	src     func(i int) net.IP
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	open    atomic.Int64 // connections the server has not closed
	dialed  atomic.Int64
	refused atomic.Int64 // closed by the server within a second
}

func startFlood(t *testing.T, addr string, src func(i int) net.IP) *flood {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flood{addr: addr, src: src, ctx: ctx, stop: cancel}
	for i := 0; i < floodConns; i++ {
		f.wg.Add(1)
		go f.hold(i)
	}
	t.Cleanup(f.halt)
	deadline := time.Now().Add(30 * time.Second)
	for f.dialed.Load() < floodConns && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

// hold keeps one flood connection open, dialling again after the server
// closes it.
func (f *flood) hold(i int) {
	defer f.wg.Done()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: f.src(i)}}
	for f.ctx.Err() == nil {
		nc, err := d.DialContext(f.ctx, "tcp", f.addr)
		f.dialed.Add(1)
		if err == nil {
			f.open.Add(1)
			start := time.Now()
			stop := context.AfterFunc(f.ctx, func() { nc.Close() })
			io.Copy(io.Discard, nc) // the greeting, then EOF when the server gives up
			stop()
			nc.Close()
			f.open.Add(-1)
			if time.Since(start) < time.Second {
				f.refused.Add(1)
			}
		}
		select {
		case <-f.ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (f *flood) halt() {
	f.stop()
	f.wg.Wait()
}

// slowloris sends the client flags and options one byte a second, and
// reports how long the server kept the connection open.
func slowloris(addr string, src net.IP, result chan<- time.Duration) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		result <- 0
		return
	}
	defer nc.Close()
	start := time.Now()
	msg := append([]byte{0, 0, 0, 3}, optionBytes(optList, nil)...)
	msg = append(msg, optionBytes(nbdwire.OptGo, infoPayload("vol"))...)
	closed := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, nc)
		closed <- time.Since(start)
	}()
	for _, b := range msg {
		if _, err := nc.Write([]byte{b}); err != nil {
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

// latencies records how long the legitimate client's operations take.
type latencies []time.Duration

// String gives the count, median and 99th percentile.
func (l latencies) String() string {
	if len(l) == 0 {
		return "none"
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(s), s[len(s)/2], s[len(s)*99/100], s[len(s)-1])
}

// maxSessionAttempts bounds how often the legitimate client tries one
// session. A client that reconnects with backoff, as Trireme's does, is
// served as long as some attempt succeeds; the tests count the failed
// ones.
const maxSessionAttempts = 20

// legitimateClient measures, for n rounds, a whole new session (connect,
// STARTTLS, GO, one 4 KiB read, disconnect; retried until one attempt
// succeeds) and a read on a session that stays open. It returns how many
// attempts failed.
func legitimateClient(t *testing.T, addr string, pki *testPKI, open *testClient, n int) (sessions, reads latencies, failed int) {
	t.Helper()
	cfg := pki.clientConfig(pki.frontend)
	for i := 0; i < n; i++ {
		start := time.Now()
		var err error
		for attempt := 0; attempt < maxSessionAttempts; attempt++ {
			if err = trySession(addr, cfg); err == nil {
				break
			}
			failed++
		}
		if err != nil {
			t.Fatalf("no session in %d attempts, the last: %v", maxSessionAttempts, err)
		}
		sessions = append(sessions, time.Since(start))

		start = time.Now()
		open.readAt(uint64(i), uint64(i%16)*4096, 4096)
		reads = append(reads, time.Since(start))
	}
	return sessions, reads, failed
}

// trySession runs one session: connect, STARTTLS, GO, read 4 KiB of
// "vol", disconnect.
func trySession(addr string, cfg *tls.Config) error {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(2 * ioTimeout))
	if _, err := io.ReadFull(nc, make([]byte, greetingSize)); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	hello := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	if _, err := nc.Write(append(hello, optionBytes(optStartTLS, nil)...)); err != nil {
		return err
	}
	if typ, err := readReplyType(nc); err != nil || typ != nbdwire.RepAck {
		return fmt.Errorf("STARTTLS: reply %#x, %v", typ, err)
	}
	tc := tls.Client(nc, cfg)
	if _, err := tc.Write(optionBytes(nbdwire.OptGo, infoPayload("vol"))); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	for {
		typ, err := readReplyType(tc)
		if err != nil {
			return fmt.Errorf("GO: %w", err)
		}
		if typ == nbdwire.RepAck {
			break
		}
		if typ != nbdwire.RepInfo {
			return fmt.Errorf("GO: reply %#x", typ)
		}
	}
	read := requestBytes(nbdwire.CmdRead, 0, 1, 0, 4096)
	if _, err := tc.Write(read); err != nil {
		return err
	}
	reply := make([]byte, replyHeaderSize+4096)
	if _, err := io.ReadFull(tc, reply); err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if errno := binary.BigEndian.Uint32(reply[4:]); errno != 0 {
		return fmt.Errorf("read: errno %d", errno)
	}
	_, err = tc.Write(requestBytes(nbdwire.CmdDisc, 0, 2, 0, 0))
	return err
}

// readReplyType reads one option reply and returns its type.
func readReplyType(r io.Reader) (uint32, error) {
	h := make([]byte, optionReplyHeader)
	if _, err := io.ReadFull(r, h); err != nil {
		return 0, err
	}
	_, err := io.CopyN(io.Discard, r, int64(binary.BigEndian.Uint32(h[16:])))
	return binary.BigEndian.Uint32(h[12:]), err
}

// openSession starts a session that stays open for the whole test.
func openSession(t *testing.T, addr string, pki *testPKI) *testClient {
	c := dial(t, addr)
	c.handshake(clientFixedNewstyle | clientNoZeroes)
	c.mustStartTLS(pki.clientConfig(pki.frontend))
	c.connectTLSDone("vol")
	return c
}

func TestFloodOfHalfOpenConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("opens a thousand connections")
	}
	tests := []struct {
		name string
		opts Options
		// src is the flood's source address for connection i.
		src func(i int) net.IP
	}{
		{"from one address, per-address limit", Options{MaxConnsPerIP: 32, MaxNegotiating: 256},
			func(int) net.IP { return net.IPv4(127, 0, 0, 2) }},
		{"from a thousand addresses, negotiation limit", Options{MaxConnsPerIP: 32, MaxNegotiating: 256},
			func(i int) net.IP { return net.IPv4(127, 0, 1+byte(i/250), 1+byte(i%250)) }},
		{"from one address, no limits", Options{},
			func(int) net.IP { return net.IPv4(127, 0, 0, 2) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pki := newTestPKI(t)
			opts := tt.opts
			opts.TLS = pki.server.ServerConfig(nil)
			opts.HandshakeTimeout = 3 * time.Second
			exp := newMemExport(1 << 20)
			addr, _ := startServer(t, memExports{"vol": exp}, opts)
			open := openSession(t, addr, pki)

			const rounds = 50
			sessions, reads, failed := legitimateClient(t, addr, pki, open, rounds)
			t.Logf("before the flood: new session %v (%d failed attempts); read on open session %v", sessions, failed, reads)

			slow := make(chan time.Duration, 1)
			go slowloris(addr, net.IPv4(127, 0, 0, 3), slow)
			f := startFlood(t, addr, tt.src)
			t.Logf("flood: %d dials, %d connections open, %d closed within a second",
				f.dialed.Load(), f.open.Load(), f.refused.Load())

			sessions, reads, failed = legitimateClient(t, addr, pki, open, rounds)
			t.Logf("during the flood: new session %v (%d failed attempts); read on open session %v", sessions, failed, reads)
			t.Logf("flood: %d dials, %d connections open, %d closed within a second",
				f.dialed.Load(), f.open.Load(), f.refused.Load())

			select {
			case d := <-slow:
				// The slowloris sends 60 bytes over a minute; the
				// handshake deadline must cut it off long before.
				if d > opts.HandshakeTimeout+5*time.Second {
					t.Errorf("slowloris held its connection for %v, handshake timeout %v", d, opts.HandshakeTimeout)
				}
				t.Logf("slowloris cut off after %v", d.Round(time.Millisecond))
			case <-time.After(opts.HandshakeTimeout + 10*time.Second):
				t.Errorf("slowloris still connected after %v", opts.HandshakeTimeout+10*time.Second)
			}
			f.halt()
			exp.checkIntact(t)
		})
	}
}

func TestPerAddressLimitClosesExtraConnections(t *testing.T) {
	_, exports := oneExport()
	addr, _ := startServer(t, exports, Options{MaxConnsPerIP: 2})
	held := []*testClient{dial(t, addr), dial(t, addr)}
	for _, c := range held {
		c.read(greetingSize)
	}
	extra := dial(t, addr)
	extra.expectClosed()

	other := dialFrom(t, addr, net.IPv4(127, 0, 0, 2))
	other.read(greetingSize) // another address has its own allowance

	held[0].nc.Close()
	deadline := time.Now().Add(ioTimeout)
	for {
		c := dial(t, addr)
		c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := io.ReadFull(c.br, make([]byte, greetingSize)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection admitted after one of the address's connections closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNegotiationLimitEvictsTheOldest(t *testing.T) {
	_, exports := oneExport()
	s := NewServer(exports, Options{MaxNegotiating: 2})
	first, firstDone := servePair(t, s)
	second, _ := servePair(t, s)
	first.read(greetingSize)
	second.read(greetingSize)
	third, _ := servePair(t, s)
	first.expectClosed()
	if err := waitServeConn(t, firstDone); !errors.Is(err, errEvicted) {
		t.Errorf("oldest connection ended with %v, want errEvicted", err)
	}
	third.connect("vol") // the newest negotiates normally
	third.readAt(1, 0, 512)

	// A connection in transmission no longer counts: a fourth evicts
	// nobody, so the second can still negotiate.
	fourth, _ := servePair(t, s)
	fourth.read(greetingSize)
	second.write(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle))
	second.sendOption(nbdwire.OptGo, infoPayload("vol"))
	if rs := second.readOptionReplies(); rs[len(rs)-1].typ != nbdwire.RepAck {
		t.Errorf("second connection's GO: %+v", rs)
	}
	third.readAt(2, 0, 512)
	s.Close()
}

// dialFrom connects a test client to addr from a given source address.
func dialFrom(t *testing.T, addr string, src net.IP) *testClient {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &testClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func TestNegotiationLimitEvictsSilentBeforeTalking(t *testing.T) {
	_, exports := oneExport()
	s := NewServer(exports, Options{MaxNegotiating: 2})
	defer s.Close()
	talking, _ := servePair(t, s)
	talking.handshake(clientFixedNewstyle)
	talking.sendOption(optInfo, infoPayload("vol"))
	talking.readOptionReplies() // the server has heard from it
	silent, silentDone := servePair(t, s)
	silent.read(greetingSize)

	third, _ := servePair(t, s)
	third.read(greetingSize)
	silent.expectClosed()
	if err := waitServeConn(t, silentDone); !errors.Is(err, errEvicted) {
		t.Errorf("silent connection ended with %v, want errEvicted", err)
	}
	talking.sendOption(nbdwire.OptGo, infoPayload("vol"))
	if rs := talking.readOptionReplies(); rs[len(rs)-1].typ != nbdwire.RepAck {
		t.Errorf("the older, talking connection was refused: %+v", rs)
	}
}

func TestHandshakeTimeoutBoundsATricklingClient(t *testing.T) {
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, Options{HandshakeTimeout: 300 * time.Millisecond}))
	start := time.Now()
	c.read(greetingSize)
	msg := append(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle), optionBytes(optList, nil)...)
	msg = append(msg, optionBytes(nbdwire.OptGo, infoPayload("vol"))...)
	go func() {
		// A byte every 20ms: each read makes progress, the whole
		// negotiation would take over a second.
		for _, b := range msg {
			if _, err := c.nc.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	err := waitServeConn(t, done)
	if !errors.Is(err, errHandshakeTimeout) {
		t.Errorf("ServeConn = %v, want errHandshakeTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a trickling client kept negotiating for %v, handshake timeout 300ms", d)
	}
}
