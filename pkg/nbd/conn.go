package nbd

import (
	"bufio"
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"k8s.io/klog/v2"
)

// conn is one client connection, from greeting to close.
type conn struct {
	srv    *Server
	raw    net.Conn // the accepted connection; shutdown closes it
	remote string
	ctx    context.Context
	cancel context.CancelFunc

	// The connection and reader requests arrive on: raw at first, then
	// TLS after STARTTLS. Set during negotiation, read-only afterwards.
	nc      net.Conn
	br      *bufio.Reader
	tlsConn *tls.Conn         // nil until STARTTLS completes
	peer    *x509.Certificate // the client's certificate under TLS
	bw      *bufio.Writer     // gathers replies into TLS records

	// Kept by the server's admission, under its lock.
	ip            netip.Addr    // counted against the address's limit
	negotiating   *list.Element // in a list of negotiating connections
	heard         bool          // which list: some bytes were received
	inNegotiation atomic.Bool   // negotiating is set; read without the lock

	// Set by negotiation, read-only afterwards.
	noZeroes bool
	name     string
	export   Export
	// size is the export's size as the transmit loop last read it: set
	// by negotiation, then refreshed before each request is checked,
	// by the transmit loop only.
	size uint64

	wmu      sync.Mutex  // guards the reply batch below
	replies  net.Buffers // replies waiting to be written
	flushing bool        // a handler is writing the batch
	flushed  sync.Cond   // signalled when a batch write ends, on wmu
	limit    *limiter

	closeOnce sync.Once
	failMu    sync.Mutex
	failure   error

	requests       atomic.Int64
	refusedOptions atomic.Int64
	rejected       atomic.Int64
	exportErrors   atomic.Int64
}

// newConn wraps an accepted connection.
func newConn(s *Server, nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{
		srv:    s,
		raw:    nc,
		remote: nc.RemoteAddr().String(),
		ctx:    ctx,
		cancel: cancel,
		limit:  newLimiter(s.opts.MaxInFlight, s.opts.MaxInFlightBytes),
	}
	c.flushed.L = &c.wmu
	c.nc = &heardConn{Conn: nc, c: c}
	c.br = bufio.NewReaderSize(c.nc, negotiationBufferSize)
	return c
}

// serve runs negotiation and transmission, then closes the connection.
func (c *conn) serve() error {
	klog.V(2).InfoS("NBD client connected", "remote", c.remote)
	err := c.negotiate()
	c.srv.admission.endNegotiation(c)
	if err == nil {
		if c.tlsConn == nil {
			c.nc = c.raw // keeps writev for replies
		}
		c.br = c.transmissionReader()
		err = c.transmit()
	}
	err = c.reason(err)
	c.shutdown()
	c.limit.waitIdle()
	c.logEnd(err)
	if errors.Is(err, errClientAborted) {
		return nil
	}
	return err
}

// shutdown cancels the Export context and closes the socket. It is safe
// to call more than once and from any goroutine.
func (c *conn) shutdown() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.raw.Close()
	})
}

// fail records why a handler gave up on the connection and closes it.
// Failures after shutdown are consequences, not reasons, and are dropped.
func (c *conn) fail(err error) {
	c.failMu.Lock()
	if c.failure == nil && c.ctx.Err() == nil {
		c.failure = err
	}
	c.failMu.Unlock()
	c.shutdown()
}

// reason picks the error that explains the end of the connection. It
// runs before serve's own shutdown, so a connection already shut down was
// closed by a failing handler, whose error beats the read error it
// caused, or by Server.Close.
func (c *conn) reason(err error) error {
	c.failMu.Lock()
	defer c.failMu.Unlock()
	switch {
	case c.failure != nil:
		return c.failure
	case err != nil && c.ctx.Err() != nil:
		return ErrServerClosed
	default:
		return err
	}
}

// readFull reads the start of a frame. A clean EOF before the first byte
// means the client went away between frames.
func (c *conn) readFull(b []byte) error {
	n, err := io.ReadFull(c.br, b)
	if err != nil && n == 0 && errors.Is(err, io.EOF) {
		return errClientDisconnected
	}
	return readError(err)
}

// readRest reads the remainder of a frame whose header was already read.
func (c *conn) readRest(b []byte) error {
	_, err := io.ReadFull(c.br, b)
	return readError(err)
}

// discard skips n payload bytes of a refused write.
func (c *conn) discard(n uint32) error {
	_, err := io.CopyN(io.Discard, c.br, int64(n))
	return readError(err)
}

// readError names a read failure after what it means for the protocol.
func readError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errTruncated
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w: %w", errHandshakeTimeout, err)
	default:
		return err
	}
}

// write sends b in one call. Negotiation is single-threaded; transmission
// replies go through sendReply instead.
func (c *conn) write(b []byte) error {
	_, err := c.nc.Write(b)
	return err
}
