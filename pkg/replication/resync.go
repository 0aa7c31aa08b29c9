package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

var errLinkDown = errors.New("link down")

func contextWithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// Resync modes: how a link brings its replica to the primary's data.
const (
	// modeCompare asks the replica for a checksum of every chunk and
	// copies the chunks that differ. It needs no history: it serves a new
	// replica (whose holes answer at once), a returning one the primary
	// has no record of, and the verification of InSync replicas by a
	// primary that has just taken over.
	modeCompare = "compare"
	// modeDirty copies only the regions a tracker recorded while the
	// replica was away.
	modeDirty = "dirty"
)

// compareAhead is how many checksum requests a resync keeps in flight
// ahead of the chunk it is repairing, so that the copy never waits for a
// round trip to the replica.
const compareAhead = 32

// syncLoop runs on a link once it is connected. A Syncing replica gets a
// resync, then the end-of-copy marker, then the primary asks the
// controller to mark it InSync (I5). An InSync replica of a primary that
// has just started is verified: every chunk where it differs from the
// primary is copied over. Differences there can only be writes no client
// saw acknowledged, sent by a previous primary to some replicas and not
// to others; verification makes every InSync replica byte-identical again.
//
// Every chunk is read and queued under the sequencing lock, the lock that
// orders live writes. A live write to the chunk's range is queued either
// before the chunk (and the chunk, read later, already holds its data) or
// after it (and overwrites the chunk on the replica). Older data can never
// land on newer, whatever the alignment of the write (I5).
func (l *link) syncLoop(syncing bool, t *tracker) {
	p := l.p
	start := time.Now()
	tokens := make(chan struct{}, max(1, p.opts.CopyWindow/p.opts.CopyChunk))
	mode := modeCompare
	var err error
	if t != nil && t.incarnation != 0 && t.incarnation == l.incarnation && !t.missed.overflow {
		mode = modeDirty
		err = l.copyRegions(t.missed, tokens)
	} else {
		l.syncTotal.Store(p.Size())
		err = l.compareCopy(tokens)
	}
	if err == nil && !syncing {
		err = l.waitCopies(tokens)
	}
	if err != nil {
		if !errors.Is(err, errLinkDown) {
			l.fail(err)
		}
		return
	}
	keys := append(l.logKeys(), "mode", mode, "scanned", l.syncedBytes.Load(),
		"copied", l.copiedBytes.Load(), "duration", time.Since(start).Round(time.Millisecond))
	if !syncing {
		l.verified.Store(true)
		klog.InfoS("Replica verified", keys...)
		return
	}
	if err := l.finishCopy(); err != nil {
		return
	}
	klog.InfoS("Replica copy complete", keys...)
	l.reportSynced()
}

// copyRegions copies the regions of missed, in chunks of at most
// CopyChunk bytes.
func (l *link) copyRegions(missed *regionSet, tokens chan struct{}) error {
	p := l.p
	extents := missed.extents(p.Size(), int64(p.opts.CopyChunk))
	var total int64
	for _, e := range extents {
		total += e.n
	}
	l.syncTotal.Store(total)
	for _, e := range extents {
		if err := l.takeToken(tokens); err != nil {
			return err
		}
		p.seqMu.Lock()
		err := l.copyChunkLocked(e.off, e.n, tokens)
		p.seqMu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// check is one outstanding checksum request.
type check struct {
	off, n int64
	reply  chan Frame
}

// compareCopy asks for the replica's checksum of every chunk, keeping
// compareAhead requests in flight, and copies the chunks that differ.
func (l *link) compareCopy(tokens chan struct{}) error {
	p := l.p
	size, chunk := p.Size(), int64(p.opts.CopyChunk)
	var checks []check // asked, oldest first
	for off := int64(0); off < size || len(checks) > 0; {
		for len(checks) < compareAhead && off < size {
			c, err := l.askChecksum(off, min(chunk, size-off))
			if err != nil {
				return err
			}
			checks = append(checks, c)
			off += c.n
		}
		c := checks[0]
		checks = checks[1:]
		var f Frame
		select {
		case f = <-c.reply:
		case <-l.quit:
			return errLinkDown
		}
		if len(f.Payload) != 8 {
			return fmt.Errorf("checksum reply of %d bytes: %w", len(f.Payload), ErrBadRequest)
		}
		if err := l.repairChunk(c.off, c.n, binary.BigEndian.Uint64(f.Payload), tokens); err != nil {
			return err
		}
	}
	return nil
}

func (l *link) askChecksum(off, n int64) (check, error) {
	c := check{off: off, n: n, reply: make(chan Frame, 1)}
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if l.faulted != nil || l.closed {
		return c, errLinkDown
	}
	l.enqueueLocked(Frame{Op: OpChecksum, Offset: uint64(off), Length: uint32(n)}, &pending{reply: c.reply})
	return c, nil
}

// repairChunk copies the chunk unless the replica already holds the
// primary's bytes there. The replica's sum was taken at the point of the
// write stream where its request was queued; the primary's is taken now.
// Every write queued in between reaches the replica too, so if the two
// agree the replica ends up with the primary's bytes, and if they do not
// the copy is queued after those writes and carries their data.
func (l *link) repairChunk(off, n int64, remote uint64, tokens chan struct{}) error {
	p := l.p
	if err := l.takeToken(tokens); err != nil {
		return err
	}
	p.seqMu.Lock()
	defer p.seqMu.Unlock()
	same, err := l.sameLocked(off, n, remote)
	if err != nil {
		<-tokens
		return err
	}
	if same {
		<-tokens
		l.syncedBytes.Add(n)
		return nil
	}
	return l.copyChunkLocked(off, n, tokens)
}

// sameLocked says whether the primary's chunk has the replica's sum.
func (l *link) sameLocked(off, n int64, remote uint64) (bool, error) {
	start, _, err := l.p.store.NextData(off)
	if err != nil {
		return false, err
	}
	if hole := start >= off+n; hole || remote == blockstore.HoleSum {
		return hole && remote == blockstore.HoleSum, nil
	}
	local, err := l.p.store.Checksum(off, n)
	return local == remote, err
}

func (l *link) takeToken(tokens chan struct{}) error {
	select {
	case tokens <- struct{}{}:
		return nil
	case <-l.quit:
		return errLinkDown
	}
}

// copyChunkLocked queues the primary's bytes of a chunk to the replica: a
// hole as a punch, data as a write. The caller holds seqMu and a token,
// which the acknowledgement releases.
func (l *link) copyChunkLocked(off, n int64, tokens chan struct{}) error {
	p := l.p
	f := Frame{Op: OpZero, Flags: FlagCopy, Offset: uint64(off), Length: uint32(n)}
	if dataStart, _, err := p.store.NextData(off); err != nil || dataStart < off+n {
		buf := copyBuffer(int(n))
		sum, err := readSummed(p.store.ReadAt, buf, off)
		if err != nil {
			<-tokens
			return err
		}
		f = Frame{Op: OpWrite, Flags: FlagCopy, Offset: uint64(off), Length: uint32(n), Payload: buf,
			payloadSum: sum, hasPayloadSum: true}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.faulted != nil || l.closed {
		<-tokens
		return errLinkDown
	}
	l.enqueueLocked(f, &pending{copied: n, tokens: tokens})
	return nil
}

// waitCopies waits until every copy frame is acknowledged: the window is
// empty when all its tokens can be taken.
func (l *link) waitCopies(tokens chan struct{}) error {
	for range cap(tokens) {
		if err := l.takeToken(tokens); err != nil {
			return err
		}
	}
	return nil
}

// finishCopy queues the end-of-copy marker behind every copy frame and
// waits for it: once acknowledged, the replica has applied the whole copy
// and every live write queued before it, and has made them durable.
func (l *link) finishCopy() error {
	p := l.p
	done := make(chan error, 1)
	p.seqMu.Lock()
	p.mu.Lock()
	if l.faulted != nil || l.closed {
		p.mu.Unlock()
		p.seqMu.Unlock()
		return errLinkDown
	}
	l.enqueueLocked(Frame{Op: OpSyncDone}, &pending{done: done})
	p.mu.Unlock()
	p.seqMu.Unlock()
	select {
	case err := <-done:
		if err == nil {
			p.mu.Lock()
			l.copied.Store(true)
			p.recheckLocked()
			p.mu.Unlock()
		}
		return err
	case <-l.quit:
		return errLinkDown
	}
}

// reportSynced asks the controller to count the replica, and retries until
// the layout lists it as InSync or the link goes away.
func (l *link) reportSynced() {
	p := l.p
	for {
		if p.opts.Reporter == nil {
			klog.InfoS("Replica copy complete; waiting for a layout that marks it InSync", l.logKeys()...)
			return
		}
		layout := p.Layout()
		next, err := p.opts.Reporter.ReplicaSynced(p.ctx, layout.VolumeID, layout.Epoch, l.node)
		if err == nil {
			err = p.UpdateLayout(next)
		}
		if err != nil {
			klog.ErrorS(err, "Reporting synced replica failed; will retry", l.logKeys()...)
		}
		p.mu.Lock()
		done := l.state == InSync || l.p.links[l.node] != l || l.closed || l.faulted != nil
		p.mu.Unlock()
		if done {
			return
		}
		select {
		case <-p.ctx.Done():
			return
		case <-time.After(p.opts.RetryInterval):
		}
	}
}
