package nbd

import (
	"container/list"
	"net"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/netlimit"
)

// admission applies a server's connection limits: how many connections
// one client address may hold, and how many may be negotiating at once.
//
// A connection over the per-address limit is closed as soon as it is
// accepted. A new connection that finds the negotiation limit reached
// evicts another rather than being refused: the oldest of those the
// server has not received a byte from yet, or when every one has sent
// something, the one heard from least recently. A flood of silent or
// trickling connections thus cycles through the slots, while a client
// that negotiates promptly (a message every few milliseconds) stays.
// Every negotiation is also bounded by Options.HandshakeTimeout.
type admission struct {
	maxPerIP       int // 0: no limit
	maxNegotiating int // 0: no limit
	perIP          *netlimit.PerAddr

	mu      sync.Mutex
	silent  list.List // negotiating *conn not heard from yet, oldest first
	heard   list.List // negotiating *conn heard from, least recently first
	refused int64     // connections refused since the last log line
	evicted int64     // connections evicted since the last log line
	lastLog time.Time
}

// limitLogInterval spaces the log lines about refused and evicted
// connections, so that a flood does not flood the log too.
const limitLogInterval = 10 * time.Second

func newAdmission(maxPerIP, maxNegotiating int) *admission {
	return &admission{maxPerIP: maxPerIP, maxNegotiating: max(maxNegotiating, 0),
		perIP: netlimit.NewPerAddr(maxPerIP)}
}

// admit counts a new connection against its address's limit, and reports
// false (counting nothing) when the address is over it.
func (a *admission) admit(c *conn) bool {
	ip, ok := a.perIP.Acquire(c.raw)
	if !ok {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.refused++
		a.logLocked("connections per address", a.maxPerIP, c.remote)
		return false
	}
	c.ip = ip
	return true
}

// release forgets an admitted connection that has ended.
func (a *admission) release(c *conn) {
	a.perIP.Release(c.ip)
}

// startNegotiation records that c negotiates, and returns the connection
// it evicts to stay within the limit, or nil.
func (a *admission) startNegotiation(c *conn) *conn {
	if a.maxNegotiating == 0 {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var evict *conn
	if a.silent.Len()+a.heard.Len() >= a.maxNegotiating {
		evict = a.evictLocked()
		a.evicted++
		a.logLocked("connections negotiating", a.maxNegotiating, evict.remote)
	}
	c.negotiating, c.heard = a.silent.PushBack(c), false
	c.inNegotiation.Store(true)
	return evict
}

// evictLocked takes the connection to evict out of the lists.
func (a *admission) evictLocked() *conn {
	l := &a.silent
	if l.Len() == 0 {
		l = &a.heard
	}
	c := l.Remove(l.Front()).(*conn)
	c.negotiating = nil
	c.inNegotiation.Store(false)
	return c
}

// listOf returns the list holding a negotiating connection.
func (a *admission) listOf(c *conn) *list.List {
	if c.heard {
		return &a.heard
	}
	return &a.silent
}

// heardFrom moves a negotiating connection that just sent bytes to the
// end of the eviction order.
func (a *admission) heardFrom(c *conn) {
	if !c.inNegotiation.Load() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case c.negotiating == nil:
	case c.heard:
		a.heard.MoveToBack(c.negotiating)
	default:
		a.silent.Remove(c.negotiating)
		c.negotiating, c.heard = a.heard.PushBack(c), true
	}
}

// endNegotiation records that c negotiates no more. It is safe to call
// more than once.
func (a *admission) endNegotiation(c *conn) {
	if a.maxNegotiating == 0 {
		return
	}
	c.inNegotiation.Store(false)
	a.mu.Lock()
	defer a.mu.Unlock()
	if c.negotiating != nil {
		a.listOf(c).Remove(c.negotiating)
		c.negotiating = nil
	}
}

// heardConn tells the server's admission whenever a negotiating
// connection receives bytes.
type heardConn struct {
	net.Conn
	c *conn
}

// Read implements io.Reader.
func (h *heardConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if n > 0 {
		h.c.srv.admission.heardFrom(h.c)
	}
	return n, err
}

// logLocked logs that a limit turned connections away, at most once per
// limitLogInterval, with the counts since the last line.
func (a *admission) logLocked(limit string, value int, remote string) {
	now := time.Now()
	if now.Sub(a.lastLog) < limitLogInterval {
		return
	}
	klog.InfoS("NBD connection limit reached", "limit", limit, "value", value, "remote", remote,
		"refused", a.refused, "evicted", a.evicted)
	a.refused, a.evicted, a.lastLog = 0, 0, now
}
