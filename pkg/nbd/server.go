package nbd

import (
	"github.com/trireme-csi/trireme/internal/budget"

	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Defaults for the zero fields of Options.
const (
	// DefaultHandshakeTimeout bounds negotiation when
	// Options.HandshakeTimeout is zero.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultMaxInFlight is the per-connection request limit when
	// Options.MaxInFlight is zero.
	DefaultMaxInFlight = 64
	// DefaultMaxInFlightBytes is the per-connection buffer limit when
	// Options.MaxInFlightBytes is zero.
	DefaultMaxInFlightBytes = 128 << 20
	// DefaultMaxServerBytes is the limit on buffers across all connections
	// when Options.MaxServerBytes is zero.
	DefaultMaxServerBytes = 512 << 20
	// DefaultMaxOptions is the per-negotiation option limit when
	// Options.MaxOptions is zero.
	DefaultMaxOptions = 1024
)

// Options tune a Server. The zero value selects the defaults above.
type Options struct {
	// HandshakeTimeout bounds the whole negotiation phase of a
	// connection, so that a silent client cannot hold it open.
	HandshakeTimeout time.Duration
	// MaxInFlight bounds the requests of one connection handled at once.
	// The server stops reading from a client that reaches it.
	MaxInFlight int
	// MaxInFlightBytes bounds the READ and WRITE buffers one connection
	// holds at once. A single request larger than the bound is still
	// served, alone.
	MaxInFlightBytes int64
	// MaxServerBytes bounds the READ and WRITE buffers all connections
	// hold together, so many clients cannot exhaust memory.
	MaxServerBytes int64
	// MaxOptions bounds the options a client may send before it starts
	// transmission; the connection is closed past it.
	MaxOptions int

	// TLS, when set, requires every client to upgrade with
	// NBD_OPT_STARTTLS before any other option is answered (the
	// specification's forced TLS mode): a client that does not learns
	// nothing, not even the export names. Clients must present a
	// certificate that ClientCAs verifies: the server requires one
	// whatever ClientAuth says (certs.Bundle.ServerConfig builds such a
	// configuration). Nil serves plain TCP.
	TLS *tls.Config
	// Authorize, when set, decides whether a client may open an export,
	// before the export is looked up: an error refuses NBD_OPT_INFO and
	// NBD_OPT_GO with NBD_REP_ERR_POLICY, and ends a connection that
	// sent NBD_OPT_EXPORT_NAME. NBD_OPT_LIST names only the exports it
	// admits. peer is the client's verified certificate, nil on a
	// connection without TLS. It must be safe for concurrent use.
	Authorize func(peer *x509.Certificate, exportName string) error
	// MaxConnsPerIP bounds the connections one client address may hold
	// at once; further ones are closed when accepted. Zero means no limit.
	MaxConnsPerIP int
	// MaxNegotiating bounds the connections negotiating at once; a new
	// connection past it evicts the one negotiating longest. Zero means
	// no limit.
	MaxNegotiating int
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() Options {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxInFlightBytes <= 0 {
		o.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if o.MaxServerBytes <= 0 {
		o.MaxServerBytes = DefaultMaxServerBytes
	}
	if o.MaxOptions <= 0 {
		o.MaxOptions = DefaultMaxOptions
	}
	if o.TLS != nil && o.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		o.TLS = o.TLS.Clone()
		o.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return o
}

// Server serves Exports to NBD clients. It is safe for concurrent use;
// one Server may serve several listeners.
type Server struct {
	exports   Exports
	opts      Options
	budget    *budget.Budget // request buffers across connections
	admission *admission

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	wg        sync.WaitGroup
}

// NewServer returns a Server for the given exports.
func NewServer(exports Exports, opts Options) *Server {
	opts = opts.withDefaults()
	return &Server{
		exports:   exports,
		opts:      opts,
		budget:    budget.New(opts.MaxServerBytes),
		admission: newAdmission(opts.MaxConnsPerIP, opts.MaxNegotiating),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns ErrServerClosed after Close, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	if !s.addListener(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.removeListener(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if !retryable(err) {
				return fmt.Errorf("nbd: accept: %w", err)
			}
			delay = backoff(delay)
			klog.ErrorS(err, "NBD accept failed, retrying", "addr", l.Addr(), "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := newConn(s, nc)
		if !s.admission.admit(c) {
			c.shutdown()
			continue
		}
		if !s.track(c) {
			c.shutdown()
			return ErrServerClosed
		}
		go s.serveTracked(c)
	}
}

// ServeConn serves one connection, such as one end of a socket pair, and
// returns when it ends: nil when the client ended the session with
// NBD_CMD_DISC or NBD_OPT_ABORT, ErrServerClosed when Close ended it,
// otherwise the reason. It closes nc.
func (s *Server) ServeConn(nc net.Conn) error {
	c := newConn(s, nc)
	if !s.admission.admit(c) {
		c.shutdown()
		return errTooManyConns
	}
	if !s.track(c) {
		c.shutdown()
		return ErrServerClosed
	}
	return s.serveTracked(c)
}

// Close stops every listener, closes every connection (cancelling the
// context of requests in flight) and waits for their handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	listeners, conns := s.listeners, s.conns
	s.listeners, s.conns = map[net.Listener]struct{}{}, map[*conn]struct{}{}
	s.mu.Unlock()

	var first error
	for l := range listeners {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) && first == nil {
			first = err
		}
	}
	for c := range conns {
		c.shutdown()
	}
	s.wg.Wait()
	return first
}

// serveTracked runs a tracked connection and forgets it afterwards.
func (s *Server) serveTracked(c *conn) error {
	defer s.untrack(c)
	return c.serve()
}

// track registers a connection, unless the server is closed, and counts
// it as negotiating, which may evict another.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.admission.release(c)
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	if evicted := s.admission.startNegotiation(c); evicted != nil {
		evicted.fail(errEvicted)
	}
	return true
}

// untrack forgets a connection whose handler has returned.
func (s *Server) untrack(c *conn) {
	s.admission.endNegotiation(c)
	s.admission.release(c)
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// addListener registers a listener, unless the server is closed.
func (s *Server) addListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

// removeListener forgets a listener Serve no longer uses.
func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	delete(s.listeners, l)
	s.mu.Unlock()
}

// isClosed reports whether Close was called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// retryable reports whether an Accept error is a passing shortage of
// resources rather than a dead listener.
func retryable(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE,
		syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// backoff doubles the delay between Accept retries, from 5ms up to 1s.
func backoff(d time.Duration) time.Duration {
	if d == 0 {
		return 5 * time.Millisecond
	}
	return min(2*d, time.Second)
}
