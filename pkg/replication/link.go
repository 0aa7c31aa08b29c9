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

	// verify says the replica, InSync when a new primary started, must be
	// compared with the primary's data before it is trusted to have
	// missed nothing but what this primary tracks.
	verify bool
	// resume is what the replica missed while it was away, if this
	// primary tracked it; nil means compare everything.
	resume *tracker
	// incarnation is the replica's, from its hello reply.
	incarnation uint64
	// unflushed holds the regions sent since the last flush was queued;
	// flushing those sent before each flush still unacknowledged. Their
	// union is what the replica may not hold durably.
	unflushed *regionSet
	flushing  []flushed
	// fullCopy says the link is copying to a Syncing replica, a copy that
	// ends with the end-of-copy marker, itself a flush. Until the marker
	// is acknowledged the replica is not trackable (trackableLocked), and
	// after that every copy frame is durable: copy frames need no record
	// in unflushed. (The copies that verify an InSync replica do: it is
	// trusted once they are acknowledged, before any flush.)
	fullCopy bool

	syncedBytes atomic.Int64 // resync progress: bytes compared or copied
	syncTotal   atomic.Int64 // bytes the resync covers
	copiedBytes atomic.Int64 // bytes the resync sent
	copied      atomic.Bool  // background copy complete and acknowledged
	verified    atomic.Bool  // the replica holds the primary's data, bar what unflushed records
}

// flushed is the regions sent before the flush frame id.
type flushed struct {
	id      uint64
	regions *regionSet
}

// pending is a frame waiting for its reply.
type pending struct {
	op     *op           // client request, or nil
	idx    int           // this link's slot in op.acked
	sent   time.Time     // when the frame was queued
	copied int64         // background copy bytes carried
	tokens chan struct{} // copy window slot to release
	done   chan error    // for internal frames waited on directly
	reply  chan Frame    // gets the reply of a checksum request
	flush  bool          // a flush or end-of-copy marker: see flushedLocked
}

func (p *Primary) startLink(r ReplicaInfo, verify bool, resume *tracker) *link {
	l := &link{
		p: p, node: r.NodeID, addr: r.Address, state: r.State,
		outstanding: map[uint64]*pending{},
		wake:        make(chan struct{}, 1),
		quit:        make(chan struct{}),
		verify:      verify, resume: resume,
		unflushed: newRegionSet(),
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
	switch f.Op {
	case OpWrite, OpZero:
		if f.Flags&FlagCopy == 0 || !l.fullCopy {
			l.unflushed.add(int64(f.Offset), int64(f.Length))
		}
	case OpFlush, OpSyncDone:
		l.flushing = append(l.flushing, flushed{id: f.ID, regions: l.unflushed})
		l.unflushed = newRegionSet()
		pd.flush = true
	}
	l.outstanding[f.ID] = pd
	l.queue = append(l.queue, f)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *link) logKeys() []any {
	return []any{"volume", l.p.volume, "replica", l.node, "address", l.addr}
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
	l.fullCopy = syncing
	l.p.mu.Unlock()

	l.p.wg.Add(3)
	go l.sendLoop(conn)
	go l.watchdog()
	go l.receiveLoop(conn)
	switch {
	case syncing || l.verify:
		l.syncLoop(syncing, l.resume)
	default:
		l.verified.Store(true)
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
	reply, err := l.handshake(conn, r, hello)
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	p.mu.Lock()
	l.incarnation = reply.Offset
	p.mu.Unlock()
	if syncing {
		if _, err := l.handshake(conn, r, Frame{Op: OpSyncStart, Epoch: epoch}); err != nil {
			conn.Close()
			return nil, false, err
		}
	}
	conn.SetDeadline(time.Time{})
	return &bufferedConn{Conn: conn, r: r}, syncing, nil
}

func (l *link) handshake(conn net.Conn, r *bufio.Reader, f Frame) (Frame, error) {
	if _, err := f.WriteTo(conn); err != nil {
		return Frame{}, fmt.Errorf("send op %d: %w", f.Op, err)
	}
	reply, err := ReadFrame(r)
	if err != nil {
		return Frame{}, fmt.Errorf("read reply to op %d: %w", f.Op, err)
	}
	if err := reply.Status.Err(); err != nil {
		return Frame{}, fmt.Errorf("op %d refused at epoch %d (replica at %d): %w", f.Op, f.Epoch, reply.Epoch, err)
	}
	return reply, nil
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
			if batch[i].Op == OpWrite && batch[i].Flags&FlagCopy != 0 {
				// copyChunkLocked's buffer: nothing else refers to it.
				recycleCopyBuffer(batch[i].Payload)
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
		if pd.flush {
			// Only a flush's reply says the regions before it are
			// durable: a replica makes flushes durable off its apply
			// loop, so a later write's reply can overtake it.
			l.flushedLocked(f.ID)
		}
		l.ackLocked(pd, f)
	case errors.Is(err, ErrStaleEpoch):
		p.fenceLocked(fmt.Errorf("%w: replica %s is at epoch %d", ErrDeposed, l.node, f.Epoch))
	default:
		l.failLocked(fmt.Errorf("request %d: %w", f.ID, err))
	}
}

// flushedLocked forgets the regions a flush, now acknowledged, made
// durable.
func (l *link) flushedLocked(id uint64) {
	i := 0
	for i < len(l.flushing) && l.flushing[i].id <= id {
		i++
	}
	l.flushing = l.flushing[i:]
}

// missedLocked is what the replica may lack if it left the write path
// now: every region not yet durable there.
func (l *link) missedLocked() *regionSet {
	out := newRegionSet()
	out.union(l.unflushed)
	for _, f := range l.flushing {
		out.union(f.regions)
	}
	return out
}

// trackableLocked says whether the replica held the primary's data when
// it left, bar what missedLocked lists: it was verified or InSync from
// the start, or its copy was complete.
func (l *link) trackableLocked() bool {
	return l.incarnation != 0 && (l.state == InSync && l.verified.Load() || l.copied.Load())
}

func (l *link) ackLocked(pd *pending, f Frame) {
	if pd.op != nil && l.p.ops[pd.op.id] == pd.op {
		pd.op.acked[pd.idx] = true
		l.p.tryCompleteLocked(pd.op)
	}
	if pd.copied > 0 {
		l.syncedBytes.Add(pd.copied)
		l.copiedBytes.Add(pd.copied)
		<-pd.tokens
	}
	if pd.done != nil {
		pd.done <- nil
	}
	if pd.reply != nil {
		pd.reply <- f
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
	l.p.trackLocked(l)
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
	var failingSince time.Time
	for {
		if p.opts.Reporter == nil {
			klog.ErrorS(cause, "No controller to report a faulted replica to; writes that need it wait", l.logKeys()...)
			return
		}
		layout := p.Layout()
		next, err := p.opts.Reporter.ReplicaFaulted(p.ctx, layout.VolumeID, layout.Epoch, l.node, cause)
		switch {
		case err != nil && failingSince.IsZero():
			failingSince = time.Now()
		case err != nil && time.Since(failingSince) >= p.opts.FenceTimeout:
			// Writes wait for this replica and nobody answers: the
			// controller may be gone, or this node cut off from it, in
			// which case it has likely given the volume to another
			// primary. Stop serving, so that clients look for the
			// current primary instead of waiting here.
			p.mu.Lock()
			p.fenceLocked(fmt.Errorf("%w: report about %s unanswered for %s: %v",
				ErrUnreachable, l.node, time.Since(failingSince).Round(time.Millisecond), err))
			p.mu.Unlock()
			return
		case err == nil:
			failingSince = time.Time{}
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
