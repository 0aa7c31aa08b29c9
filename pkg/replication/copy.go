package replication

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"
)

var errLinkDown = errors.New("link down")

func contextWithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// copyLoop brings a Syncing replica up to date: it copies the volume in
// chunks while live writes keep flowing to the replica, then asks the
// controller to mark the replica InSync.
//
// Each chunk is read and queued under the sequencing lock, the same lock
// that orders live writes. A live write to the chunk's range is therefore
// queued either before the chunk (and the chunk, read later, already holds
// its data) or after it (and overwrites the chunk on the replica). Older
// data can never land on newer, whatever the alignment of the write (I5).
func (l *link) copyLoop() {
	p := l.p
	size, chunk := p.store.Size(), int64(p.opts.CopyChunk)
	tokens := make(chan struct{}, max(1, p.opts.CopyWindow/p.opts.CopyChunk))
	start := time.Now()
	for off := int64(0); off < size; off += chunk {
		select {
		case tokens <- struct{}{}:
		case <-l.quit:
			return
		}
		if err := l.copyChunk(off, min(chunk, size-off), tokens); err != nil {
			if !errors.Is(err, errLinkDown) {
				l.fail(err)
			}
			return
		}
	}
	if err := l.finishCopy(); err != nil {
		return
	}
	klog.InfoS("Replica copy complete", append(l.logKeys(), "bytes", size, "duration", time.Since(start))...)
	l.reportSynced()
}

func (l *link) copyChunk(off, n int64, tokens chan struct{}) error {
	p := l.p
	p.seqMu.Lock()
	defer p.seqMu.Unlock()
	if l.down() {
		return errLinkDown
	}
	f := Frame{Op: OpZero, Flags: FlagCopy, Offset: uint64(off), Length: uint32(n)}
	if dataStart, _, err := p.store.NextData(off); err != nil || dataStart < off+n {
		buf := make([]byte, n)
		if err := p.store.ReadAt(buf, off); err != nil {
			return err
		}
		f = Frame{Op: OpWrite, Flags: FlagCopy, Offset: uint64(off), Length: uint32(n), Payload: buf}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.faulted != nil || l.closed {
		return errLinkDown
	}
	l.enqueueLocked(f, &pending{copied: n, tokens: tokens})
	return nil
}

func (l *link) down() bool {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.faulted != nil || l.closed
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
