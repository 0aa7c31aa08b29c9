// Package netlimit bounds the connections one peer address may hold on a
// server, the limit the NBD, replication and gRPC servers share so that
// one client cannot take every connection slot or file descriptor.
package netlimit

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// PerAddr counts connections by peer address against a limit. The zero
// limit admits everything. It is safe for concurrent use.
type PerAddr struct {
	max int

	mu     sync.Mutex
	counts map[netip.Addr]int
}

// NewPerAddr returns a counter admitting max connections per address;
// zero or less means no limit.
func NewPerAddr(max int) *PerAddr {
	return &PerAddr{max: max, counts: map[netip.Addr]int{}}
}

// Acquire counts a connection from c's peer. It returns false, counting
// nothing, when the address holds the limit already; otherwise the
// address to give Release when the connection ends, which is the zero
// Addr when nothing was counted.
func (p *PerAddr) Acquire(c net.Conn) (netip.Addr, bool) {
	addr, ok := AddrOf(c)
	if !ok || p.max <= 0 {
		return netip.Addr{}, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts[addr] >= p.max {
		return netip.Addr{}, false
	}
	p.counts[addr]++
	return addr, true
}

// Release forgets a connection Acquire counted; the zero Addr is
// ignored.
func (p *PerAddr) Release(addr netip.Addr) {
	if !addr.IsValid() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.counts[addr]--; p.counts[addr] <= 0 {
		delete(p.counts, addr)
	}
}

// Count returns the connections counted for addr.
func (p *PerAddr) Count(addr netip.Addr) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[addr]
}

// AddrOf returns the IP address of a connection's peer, when it has one.
func AddrOf(c net.Conn) (netip.Addr, bool) {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap(), true
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// Listener closes each accepted connection whose address holds
// MaxPerAddr connections already, and releases a connection's count when
// it is closed. It suits servers such as gRPC's that bound the handshake
// themselves.
type Listener struct {
	net.Listener
	limit *PerAddr
	name  string

	refused atomic.Int64
	lastLog atomic.Int64 // unix nanoseconds of the last log line
}

// NewListener wraps l with a limit of maxPerAddr connections per peer
// address; name says which server it is in log lines.
func NewListener(l net.Listener, maxPerAddr int, name string) *Listener {
	return &Listener{Listener: l, limit: NewPerAddr(maxPerAddr), name: name}
}

// Accept returns the next connection within the limit.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, ok := l.limit.Acquire(c)
		if !ok {
			c.Close()
			l.logRefused(c)
			continue
		}
		return &conn{Conn: c, release: func() { l.limit.Release(addr) }}, nil
	}
}

// logInterval spaces the log lines about refused connections, so that a
// flood does not flood the log too.
const logInterval = 10 * time.Second

func (l *Listener) logRefused(c net.Conn) {
	n := l.refused.Add(1)
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(logInterval) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.refused.Add(-n)
	klog.InfoS("Connection limit reached", "server", l.name, "limit", "connections per address",
		"value", l.limit.max, "remote", c.RemoteAddr(), "refused", n)
}

// conn releases its count once, when first closed.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// Close closes the connection and releases its count.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
