// Package nbdclient is a Network Block Device client that survives the
// loss of its server.
//
// A Client negotiates with fixed newstyle NBD_OPT_GO, then keeps many
// requests in flight on one connection, matching replies by cookie. When
// the connection breaks, or the server answers NBD_ESHUTDOWN, the client
// asks its Endpoint for the current address, reconnects and sends the
// unanswered requests again: I/O stalls instead of failing. A request
// fails with ErrTimeout once Options.RetryTimeout has passed since it was
// first sent. A server that refuses a reconnection by policy
// (NBD_REP_ERR_POLICY: a newer attachment fenced this one) ends the
// retries: every request then fails with ErrForbidden.
//
// Resending is safe for the block device semantics NBD gives: the
// protocol orders nothing between requests in flight at the same time,
// and a request is only answered once, to its first caller.
package nbdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// Defaults for the zero fields of Options.
const (
	// DefaultRetryTimeout bounds a request across reconnections.
	DefaultRetryTimeout = 2 * time.Minute
	// DefaultConnectTimeout bounds one attempt to resolve, dial and
	// negotiate.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultDeadPeerTimeout is how long sent data may stay
	// unacknowledged by the peer's TCP stack before the connection is
	// declared dead.
	DefaultDeadPeerTimeout = 15 * time.Second
	// DefaultStallTimeout is how long a request may wait for its reply
	// before the client asks its Endpoint whether the export has moved.
	DefaultStallTimeout = time.Second
)

// Backoff between connection attempts, and how long Close waits for the
// server to answer requests in flight.
const (
	minBackoff      = 10 * time.Millisecond
	maxBackoff      = time.Second
	disconnectGrace = 5 * time.Second
	dialLogInterval = 30 * time.Second
)

// ErrNoEndpoint means Options.Endpoint is nil.
var ErrNoEndpoint = errors.New("nbd client needs an endpoint resolver")

// Endpoint returns the address (host:port) of the server that currently
// serves the export. It is called before every connection attempt, so
// it can follow a volume's primary from node to node.
type Endpoint func(ctx context.Context) (addr string, err error)

// Options configure a Client.
type Options struct {
	// Endpoint resolves the server's address. Required.
	Endpoint Endpoint
	// ExportName is the export to open; Trireme names exports by volume id.
	ExportName string
	// RetryTimeout bounds each request, and Dial, across every
	// reconnection. Zero means DefaultRetryTimeout.
	RetryTimeout time.Duration
	// ConnectTimeout bounds one connection attempt. Zero means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// DeadPeerTimeout sets TCP_USER_TIMEOUT and the keepalive probes, so
	// that a server that vanished without closing is noticed. Zero means
	// DefaultDeadPeerTimeout.
	DeadPeerTimeout time.Duration
	// StallTimeout is how long a request may wait before the client asks
	// the Endpoint where the export is now. A server that hangs without
	// closing (stopped, or cut off) has usually been replaced: when the
	// Endpoint names another address, the client leaves the connection
	// and sends its requests there. Zero means DefaultStallTimeout.
	StallTimeout time.Duration
	// TLS, when set, makes every connection upgrade with
	// NBD_OPT_STARTTLS before it opens the export; a server that does
	// not offer TLS is refused. Without a ServerName or
	// InsecureSkipVerify, the server is verified against the host the
	// Endpoint names. Nil connects over plain TCP.
	TLS *tls.Config
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() Options {
	if o.RetryTimeout <= 0 {
		o.RetryTimeout = DefaultRetryTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.DeadPeerTimeout <= 0 {
		o.DeadPeerTimeout = DefaultDeadPeerTimeout
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	return o
}

// Client is a connection to one NBD export that reconnects on failure.
// It is safe for concurrent use. Its methods match nbd.Export.
type Client struct {
	opts   Options
	info   exportInfo   // from the first connection; fixed afterwards
	size   atomic.Int64 // info.size, raised by RefreshSize
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // the reconnecting goroutine

	mu      sync.Mutex
	sess    *session      // nil while disconnected
	ready   chan struct{} // closed when sess is set
	closed  bool
	lastErr error // why the last connection attempt failed
	refused error // set when the server refused a reconnection for good
}

// Dial connects to the export, retrying until ctx ends or
// Options.RetryTimeout passes.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.Endpoint == nil {
		return nil, ErrNoEndpoint
	}
	c := &Client{opts: opts.withDefaults(), ready: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.RetryTimeout, ErrTimeout)
	defer cancel()
	s, err := c.connectRetrying(ctx)
	if err != nil {
		c.cancel(ErrClosed)
		return nil, fmt.Errorf("nbd connect to export %q: %w", opts.ExportName, err)
	}
	c.info = s.info
	c.size.Store(int64(s.info.size))
	c.install(s)
	c.wg.Add(1)
	go c.watchStalls()
	klog.InfoS("Connected to NBD export", "volume", opts.ExportName, "addr", s.addr, "size", s.info.size)
	return c, nil
}

// watchStalls leaves a session whose requests wait longer than
// StallTimeout once the Endpoint says the export is served elsewhere.
func (c *Client) watchStalls() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.StallTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		s := c.sess
		c.mu.Unlock()
		if s == nil {
			continue
		}
		oldest := s.oldest()
		if oldest.IsZero() || time.Since(oldest) < c.opts.StallTimeout {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.ConnectTimeout)
		addr, err := c.opts.Endpoint(ctx)
		cancel()
		if err != nil || addr == s.addr {
			continue
		}
		s.fail(fmt.Errorf("%w: requests waited %s on %s; the export is now at %s",
			errConnLost, time.Since(oldest).Round(time.Millisecond), s.addr, addr))
	}
}

// Size returns the export size in bytes: as first negotiated, or as
// RefreshSize last found it. It never decreases.
func (c *Client) Size() int64 { return c.size.Load() }

// ReadOnly reports whether the server refuses writes.
func (c *Client) ReadOnly() bool { return c.info.has(nbdwire.TflagReadOnly) }

// Close disconnects with NBD_CMD_DISC after giving the server a few
// seconds to answer requests in flight; requests still waiting then fail
// with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	s := c.sess
	c.sess = nil
	c.mu.Unlock()

	c.cancel(ErrClosed)
	c.wg.Wait()
	if s != nil {
		s.disconnect(disconnectGrace)
	}
	klog.InfoS("Disconnected from NBD export", "volume", c.opts.ExportName)
	return nil
}

// install makes s the live session and starts its reader. It returns
// false, closing s, when the client was closed meanwhile.
func (c *Client) install(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		s.fail(ErrClosed)
		return false
	}
	s.onLost = c.lost
	c.sess = s
	close(c.ready)
	go s.readLoop()
	return true
}

// lost replaces the dead session s with a reconnecting goroutine.
func (c *Client) lost(s *session, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != s || c.closed {
		return
	}
	c.sess = nil
	c.ready = make(chan struct{})
	klog.ErrorS(err, "Lost NBD connection; I/O waits for a new one", "volume", c.opts.ExportName, "addr", s.addr)
	c.wg.Add(1)
	go c.reconnect()
}

// reconnect connects again until it succeeds or the client is closed.
func (c *Client) reconnect() {
	defer c.wg.Done()
	start := time.Now()
	s, err := c.connectRetrying(c.ctx)
	if errors.Is(err, ErrForbidden) {
		c.refuse(err)
		return
	}
	if err != nil {
		return
	}
	if c.install(s) {
		klog.InfoS("Restored NBD connection", "volume", c.opts.ExportName, "addr", s.addr,
			"outage", time.Since(start).Round(time.Millisecond))
	}
}

// refuse makes every request, waiting or to come, fail with err: the
// server will not take this client back.
func (c *Client) refuse(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.sess != nil {
		return
	}
	c.refused = err
	close(c.ready)
	klog.ErrorS(err, "NBD server refused this client for good; I/O fails from now on", "volume", c.opts.ExportName)
}

// current returns the live session, waiting for a reconnection if
// needed, until ctx ends.
func (c *Client) current(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, ready, closed, refused := c.sess, c.ready, c.closed, c.refused
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClosed
		case refused != nil:
			return nil, refused
		}
		if s != nil {
			return s, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, c.waitError(ctx)
		case <-c.ctx.Done():
			return nil, ErrClosed
		}
	}
}

// waitError explains why a wait for a connection ended.
func (c *Client) waitError(ctx context.Context) error {
	cause := context.Cause(ctx)
	if !errors.Is(cause, ErrTimeout) {
		return cause
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr == nil {
		return cause
	}
	return fmt.Errorf("%w (last connection attempt: %w)", cause, c.lastErr)
}

// do runs one request, resending it on every new connection until it is
// answered or its retry timeout passes.
func (c *Client) do(ctx context.Context, cl *call) error {
	ctx, cancel := context.WithTimeoutCause(ctx, c.opts.RetryTimeout, ErrTimeout)
	defer cancel()
	for {
		s, err := c.current(ctx)
		if err != nil {
			return err
		}
		err = s.roundTrip(ctx, cl)
		if !errors.Is(err, errConnLost) {
			return err
		}
	}
}
