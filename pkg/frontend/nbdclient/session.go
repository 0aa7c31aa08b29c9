package nbdclient

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// call is one request waiting for its reply. At any moment it belongs to
// one party: the caller, a session's pending table, or the reader that
// took it from the table to deliver its reply. Only its owner touches
// buf, so a READ buffer is never written after the caller gave up on it.
type call struct {
	req     request
	payload []byte // WRITE data
	buf     []byte // READ destination
	err     error
	done    chan struct{} // one value per delivered reply
	sent    time.Time     // when the current session took it
}

// newCall returns a call for req.
func newCall(req request, payload, buf []byte) *call {
	return &call{req: req, payload: payload, buf: buf, done: make(chan struct{}, 1)}
}

// session is one connection in the transmission phase. Requests are
// written under wmu; one reader goroutine matches replies by cookie.
type session struct {
	nc      net.Conn
	br      *bufio.Reader
	addr    string
	info    exportInfo
	onLost  func(*session, error)
	cookies atomic.Uint64

	wmu sync.Mutex

	mu        sync.Mutex
	pending   map[uint64]*call
	abandoned map[uint64]uint32 // cookie to READ bytes to skip
	err       error
	dead      chan struct{}
}

// newSession wraps a negotiated connection. The caller starts readLoop.
func newSession(nc net.Conn, br *bufio.Reader, addr string, info exportInfo) *session {
	return &session{
		nc: nc, br: br, addr: addr, info: info,
		pending:   map[uint64]*call{},
		abandoned: map[uint64]uint32{},
		dead:      make(chan struct{}),
	}
}

// roundTrip sends c and waits for its reply. It returns an error
// wrapping errConnLost when the connection died first, and the cause of
// ctx when ctx ended first.
func (s *session) roundTrip(ctx context.Context, c *call) error {
	c.req.cookie = s.cookies.Add(1)
	c.err = nil
	if err := s.register(c); err != nil {
		return err
	}
	s.send(ctx, c)
	select {
	case <-c.done:
		return c.err
	case <-s.dead:
	case <-ctx.Done():
	}
	if !s.forget(c) {
		<-c.done // the reader is delivering it right now
		return c.err
	}
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	return s.lostError()
}

// register puts c in the pending table, unless the session is dead.
func (s *session) register(c *call) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("%w: %w", errConnLost, s.err)
	}
	c.sent = time.Now()
	s.pending[c.req.cookie] = c
	return nil
}

// oldest returns when the longest-waiting request was sent, or the zero
// time when none waits.
func (s *session) oldest() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var t time.Time
	for _, c := range s.pending {
		if t.IsZero() || c.sent.Before(t) {
			t = c.sent
		}
	}
	return t
}

// send writes c's request. A write that cannot finish before ctx's
// deadline leaves a partial frame behind, so it ends the session.
func (s *session) send(ctx context.Context, c *call) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	deadline, _ := ctx.Deadline()
	if err := s.nc.SetWriteDeadline(deadline); err != nil {
		s.fail(err)
		return
	}
	frame := c.req.frame(c.payload)
	if _, err := frame.WriteTo(s.nc); err != nil {
		s.fail(fmt.Errorf("send %s: %w", commandName(c.req.typ), err))
	}
}

// forget takes c back from the pending table. It returns false when the
// reader already took it. A forgotten request's reply, should it come,
// is read and dropped.
func (s *session) forget(c *call) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[c.req.cookie]; !ok {
		return false
	}
	delete(s.pending, c.req.cookie)
	s.abandoned[c.req.cookie] = uint32(len(c.buf))
	return true
}

// take removes the request a reply answers from the tables. For an
// abandoned request it returns nil and the READ payload length to skip.
func (s *session) take(cookie uint64) (*call, uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.pending[cookie]; ok {
		delete(s.pending, cookie)
		return c, 0, true
	}
	if n, ok := s.abandoned[cookie]; ok {
		delete(s.abandoned, cookie)
		return nil, n, true
	}
	return nil, 0, false
}

// readLoop delivers replies until the connection fails.
func (s *session) readLoop() {
	s.fail(s.readReplies())
}

// readReplies reads simple replies and delivers each to its request.
func (s *session) readReplies() error {
	var hdr [replyHeaderSize]byte
	for {
		if _, err := io.ReadFull(s.br, hdr[:]); err != nil {
			return fmt.Errorf("read reply: %w", err)
		}
		r := decodeReply(hdr[:])
		if r.magic != nbdwire.MagicSimpleReply {
			return fmt.Errorf("%w: reply magic %#x", ErrProtocol, r.magic)
		}
		c, skip, ok := s.take(r.cookie)
		if !ok {
			return fmt.Errorf("%w: reply to unknown cookie %d", ErrProtocol, r.cookie)
		}
		if err := s.deliver(c, skip, r.errno); err != nil {
			return err
		}
	}
}

// deliver reads a reply's payload into c (or skips it for an abandoned
// request) and wakes c's caller. A server shutting down fails the
// request as if the connection had died, so that it is retried.
func (s *session) deliver(c *call, skip uint32, errno uint32) error {
	if c == nil {
		if errno != 0 {
			skip = 0
		}
		_, err := io.CopyN(io.Discard, s.br, int64(skip))
		return err
	}
	var err error
	switch {
	case errno == errnoShutdown:
		err = fmt.Errorf("%w: server is shutting down", errConnLost)
		c.err = err
	case errno != 0:
		c.err = &RemoteError{Command: commandName(c.req.typ), Errno: remoteErrno(errno)}
	case c.req.typ == nbdwire.CmdRead:
		if _, rerr := io.ReadFull(s.br, c.buf); rerr != nil {
			err = fmt.Errorf("read payload: %w", rerr)
			c.err = fmt.Errorf("%w: %w", errConnLost, err)
		}
	}
	c.done <- struct{}{}
	return err
}

// fail ends the session once: it closes the connection, wakes every
// waiting caller and tells the client.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	close(s.dead)
	s.mu.Unlock()
	s.nc.Close()
	if s.onLost != nil {
		s.onLost(s, err)
	}
}

// lostError returns the reason the session died, marked retryable.
func (s *session) lostError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Errorf("%w: %w", errConnLost, s.err)
}

// disconnect sends NBD_CMD_DISC, gives the server up to timeout to
// answer the requests still in flight and close, then closes.
func (s *session) disconnect(timeout time.Duration) {
	s.wmu.Lock()
	_ = s.nc.SetWriteDeadline(time.Now().Add(timeout))
	frame := request{typ: nbdwire.CmdDisc}.frame(nil)
	_, err := frame.WriteTo(s.nc)
	s.wmu.Unlock()
	if err == nil {
		select {
		case <-s.dead:
		case <-time.After(timeout):
		}
	}
	s.fail(ErrClosed)
}
