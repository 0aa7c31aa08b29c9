package replication

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"
)

// errAckTimeout is the fault recorded when a replica is too slow.
var errAckTimeout = errors.New("replica did not acknowledge in time")

// link is the primary's connection to one replica. Its mutable fields are
// guarded by the primary's mu.
type link struct {
	p    *Primary
	node string
	addr string

	state       ReplicaState
	conn        net.Conn
	queue       []Frame
	outstanding map[uint64]*pending
	nextID      uint64
	faulted     error
	closed      bool

	wake chan struct{} // a frame was queued
	quit chan struct{} // closed when the link is closed or faulted

	syncedBytes atomic.Int64
	copied      atomic.Bool // background copy complete and acknowledged
}

// pending is a frame waiting for its reply.
type pending struct {
	op     *op           // client request, or nil
	idx    int           // this link's slot in op.acked
	sent   time.Time     // when the frame was queued
	copied int64         // background copy bytes carried
	tokens chan struct{} // copy window slot to release
	done   chan error    // for internal frames waited on directly
}

func (p *Primary) startLink(r ReplicaInfo) *link {
	l := &link{
		p: p, node: r.NodeID, addr: r.Address, state: r.State,
		outstanding: map[uint64]*pending{},
		wake:        make(chan struct{}, 1),
		quit:        make(chan struct{}),
	}
	p.wg.Add(1)
	go l.run()
	return l
}

func (l *link) enqueueLocked(f Frame, pd *pending) {
	l.nextID++
	f.ID = l.nextID
	f.Epoch = l.p.layout.Epoch
	pd.sent = time.Now()
	l.outstanding[f.ID] = pd
	l.queue = append(l.queue, f)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *link) logKeys() []any {
	return []any{"volume", l.p.layout.VolumeID, "replica", l.node, "address", l.addr}
}

// run connects, binds the connection to the volume and then serves the
// link until it is closed or faults.
func (l *link) run() {
	defer l.p.wg.Done()
	conn, syncing, err := l.connect()
	if err != nil {
		l.fail(err)
		return
	}
	l.p.mu.Lock()
	if l.closed || l.faulted != nil {
		l.p.mu.Unlock()
		conn.Close()
		return
	}
	l.conn = conn
	l.p.mu.Unlock()

	l.p.wg.Add(3)
	go l.sendLoop(conn)
	go l.watchdog()
	go l.receiveLoop(conn)
	if syncing {
		l.copyLoop()
	}
}

// connect dials the replica and exchanges the handshake frames. A Syncing
// replica is told a copy begins before any queued write reaches it.
func (l *link) connect() (net.Conn, bool, error) {
	p := l.p
	timeout := p.opts.AckTimeout
	ctx, cancel := contextWithTimeout(p.ctx, timeout)
	defer cancel()
	conn, err := p.opts.Dialer.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return nil, false, fmt.Errorf("dial %s: %w", l.addr, err)
	}
	p.mu.Lock()
	epoch, volume, syncing := p.layout.Epoch, p.layout.VolumeID, l.state == Syncing
	p.mu.Unlock()

	conn.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(conn)
	hello := Frame{Op: OpHello, Epoch: epoch, Payload: helloPayload(volume, l.node)}
	if err := l.handshake(conn, r, hello); err != nil {
		conn.Close()
		return nil, false, err
	}
	if syncing {
		if err := l.handshake(conn, r, Frame{Op: OpSyncStart, Epoch: epoch}); err != nil {
			conn.Close()
			return nil, false, err
		}
	}
	conn.SetDeadline(time.Time{})
	return &bufferedConn{Conn: conn, r: r}, syncing, nil
}

func (l *link) handshake(conn net.Conn, r *bufio.Reader, f Frame) error {
	if _, err := f.WriteTo(conn); err != nil {
		return fmt.Errorf("send op %d: %w", f.Op, err)
	}
	reply, err := ReadFrame(r)
	if err != nil {
		return fmt.Errorf("read reply to op %d: %w", f.Op, err)
	}
	if err := reply.Status.Err(); err != nil {
		return fmt.Errorf("op %d refused at epoch %d (replica at %d): %w", f.Op, f.Epoch, reply.Epoch, err)
	}
	return nil
}

// bufferedConn keeps bytes the handshake reader buffered.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// sendLoop writes queued frames, batching whatever queued up meanwhile
// into one flush.
func (l *link) sendLoop(conn net.Conn) {
	defer l.p.wg.Done()
	w := bufio.NewWriterSize(conn, 256<<10)
	var batch []Frame
	for {
		select {
		case <-l.wake:
		case <-l.quit:
			return
		}
		l.p.mu.Lock()
		batch, l.queue = l.queue, batch[:0]
		l.p.mu.Unlock()
		for i := range batch {
			if _, err := batch[i].WriteTo(w); err != nil {
				l.fail(fmt.Errorf("send: %w", err))
				return
			}
			batch[i] = Frame{}
		}
		if err := w.Flush(); err != nil {
			l.fail(fmt.Errorf("send: %w", err))
			return
		}
	}
}

func (l *link) receiveLoop(conn net.Conn) {
	defer l.p.wg.Done()
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		f, err := ReadFrame(r)
		if err != nil {
			l.fail(fmt.Errorf("receive: %w", err))
			return
		}
		l.onReply(f)
	}
}

func (l *link) onReply(f Frame) {
	p := l.p
	p.mu.Lock()
	defer p.mu.Unlock()
	pd, ok := l.outstanding[f.ID]
	if !ok || l.faulted != nil || l.closed {
		return
	}
	delete(l.outstanding, f.ID)
	switch err := f.Status.Err(); {
	case err == nil:
		l.ackLocked(pd)
	case errors.Is(err, ErrStaleEpoch):
		p.fenceLocked(fmt.Errorf("%w: replica %s is at epoch %d", ErrDeposed, l.node, f.Epoch))
	default:
		l.failLocked(fmt.Errorf("request %d: %w", f.ID, err))
	}
}

func (l *link) ackLocked(pd *pending) {
	if pd.op != nil && l.p.ops[pd.op.id] == pd.op {
		pd.op.acked[pd.idx] = true
		l.p.tryCompleteLocked(pd.op)
	}
	if pd.copied > 0 {
		l.syncedBytes.Add(pd.copied)
		<-pd.tokens
	}
	if pd.done != nil {
		pd.done <- nil
	}
}

// watchdog faults the link when a request waits longer than AckTimeout.
func (l *link) watchdog() {
	defer l.p.wg.Done()
	t := time.NewTicker(l.p.opts.AckTimeout / 4)
	defer t.Stop()
	for {
		select {
		case <-l.quit:
			return
		case now := <-t.C:
			l.p.mu.Lock()
			for _, pd := range l.outstanding {
				if now.Sub(pd.sent) > l.p.opts.AckTimeout {
					l.failLocked(errAckTimeout)
					break
				}
			}
			l.p.mu.Unlock()
		}
	}
}

func (l *link) fail(err error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	l.failLocked(err)
}

// failLocked takes the link out of service and reports it. Writes that
// need this replica keep waiting until a new layout removes it (I2).
func (l *link) failLocked(err error) {
	if l.faulted != nil || l.closed {
		return
	}
	l.faulted = err
	l.shutLocked()
	klog.InfoS("Replica faulted", append(l.logKeys(), "epoch", l.p.layout.Epoch, "state", l.state, "err", err)...)
	l.p.wg.Add(1)
	go l.reportFault(err)
}

// closeLocked takes the link out of service without reporting it.
func (l *link) closeLocked() {
	if l.closed {
		return
	}
	wasFaulted := l.faulted != nil
	l.closed = true
	if !wasFaulted {
		l.shutLocked()
	}
}

func (l *link) shutLocked() {
	close(l.quit)
	if l.conn != nil {
		l.conn.Close()
	}
	for _, pd := range l.outstanding {
		if pd.done != nil {
			pd.done <- ErrClosed
		}
	}
	l.outstanding = map[uint64]*pending{}
}

// countsLocked says whether writes wait for this link: it is InSync, or
// its copy is complete. A completed copy counts before the controller
// has made the replica InSync, so that no write is acknowledged without
// it once the record may say InSync (I1, I5).
func (l *link) countsLocked() bool {
	return l.p.links[l.node] == l && (l.state == InSync || l.copied.Load())
}

func (l *link) reportFault(cause error) {
	p := l.p
	defer p.wg.Done()
	for {
		if p.opts.Reporter == nil {
			klog.ErrorS(cause, "No controller to report a faulted replica to; writes that need it wait", l.logKeys()...)
			return
		}
		layout := p.Layout()
		next, err := p.opts.Reporter.ReplicaFaulted(p.ctx, layout.VolumeID, layout.Epoch, l.node, cause)
		if err == nil {
			err = p.UpdateLayout(next)
		}
		if err != nil {
			klog.ErrorS(err, "Reporting faulted replica failed; will retry", l.logKeys()...)
		}
		p.mu.Lock()
		counts := l.countsLocked() && p.fence == nil
		p.mu.Unlock()
		if !counts && err == nil {
			return
		}
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(p.opts.RetryInterval):
		}
	}
}
