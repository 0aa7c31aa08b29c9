package nbdclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// connectRetrying connects with exponential backoff until it succeeds,
// ctx ends or the server refuses the client for good (ErrForbidden).
func (c *Client) connectRetrying(ctx context.Context) (*session, error) {
	var lastLog time.Time
	for attempt := 0; ; attempt++ {
		s, err := c.connect(ctx)
		if err == nil {
			c.setLastErr(nil)
			return s, nil
		}
		c.setLastErr(err)
		if errors.Is(err, ErrForbidden) {
			return nil, err
		}
		if time.Since(lastLog) >= dialLogInterval {
			klog.ErrorS(err, "NBD connection attempt failed; retrying", "volume", c.opts.ExportName, "attempt", attempt+1)
			lastLog = time.Now()
		}
		select {
		case <-time.After(backoff(attempt)):
		case <-ctx.Done():
			return nil, c.waitError(ctx)
		}
	}
}

// backoff is the pause after a failed attempt: 10ms doubling up to 1s.
func backoff(attempt int) time.Duration {
	if attempt >= 7 {
		return maxBackoff
	}
	return min(minBackoff<<attempt, maxBackoff)
}

// setLastErr records the outcome of a connection attempt.
func (c *Client) setLastErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// connect resolves the endpoint, dials and negotiates once.
func (c *Client) connect(ctx context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	addr, err := c.opts.Endpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("resolve endpoint: %w", err)
	}
	nc, err := c.dialer().DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s, err := c.negotiate(ctx, nc, addr)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("negotiate with %s: %w", addr, err)
	}
	return s, nil
}

// negotiate runs the handshake under ctx's deadline and checks that the
// export still has the size the client presents.
func (c *Client) negotiate(ctx context.Context, nc net.Conn, addr string) (*session, error) {
	deadline, _ := ctx.Deadline()
	if err := nc.SetDeadline(deadline); err != nil {
		return nil, err
	}
	// Close interrupts a handshake at once rather than at its deadline.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	br := bufio.NewReaderSize(nc, 64<<10)
	nc, br, info, err := handshake(ctx, nc, br, c.opts.ExportName, tlsConfig(c.opts.TLS, addr))
	if err != nil {
		return nil, err
	}
	if size := c.Size(); int64(info.size) < size {
		return nil, fmt.Errorf("%w: %d bytes, was %d", ErrSizeChanged, info.size, size)
	}
	if !stop() {
		return nil, context.Cause(ctx)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return newSession(nc, br, addr, info), nil
}

// dialer returns a TCP dialer that notices dead peers within
// DeadPeerTimeout: keepalive probes while idle, TCP_USER_TIMEOUT while
// data is unacknowledged.
func (c *Client) dialer() *net.Dialer {
	d := c.opts.DeadPeerTimeout
	probe := max(d/3, time.Second)
	return &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: probe, Interval: probe, Count: 3},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
}
