package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/replication"
)

// setLayout acts on a new layout of a volume. The node it names primary
// starts serving the volume, or moves its running primary to the layout;
// any other node stops serving it and records the layout. When the layout
// names a new primary, the replica persists its epoch at once, so the
// deposed primary's frames are refused from now on (I3). Under the same
// primary the epoch is left to the primary's frames: raising it here
// would refuse writes the primary sent before it learned the layout.
// l must have passed validateLayout.
func (a *Agent) setLayout(l replication.Layout) (volumeInfo, error) {
	release, err := a.begin(l.VolumeID)
	if err != nil {
		return volumeInfo{}, err
	}
	defer release()

	self := l.Primary == a.cfg.NodeID
	st, ok := a.state(l.VolumeID)
	switch {
	case !ok && self:
		return volumeInfo{}, fmt.Errorf("volume %s, epoch %d: %w", l.VolumeID, l.Epoch, ErrNoLocalReplica)
	case !ok:
		return volumeInfo{}, fmt.Errorf("volume %s: %w", l.VolumeID, ErrNotFound)
	}
	if err := checkLayoutFits(st, l); err != nil {
		return volumeInfo{}, err
	}
	if err := growForLayout(st, l); err != nil {
		return volumeInfo{}, err
	}

	if self {
		err = a.servePrimary(st, l)
	} else {
		a.stopPrimary(l.VolumeID, st.primary, l.Epoch)
		err = fenceOldPrimary(st, l)
	}
	if err != nil {
		return volumeInfo{}, err
	}
	a.recordLayout(l)
	st, _ = a.state(l.VolumeID)
	return describe(st), nil
}

// fenceOldPrimary raises the replica's epoch to l's when l moves the
// primary away from the one this node last knew (or it knows none).
func fenceOldPrimary(st volumeState, l replication.Layout) error {
	if cur := st.currentLayout(); cur != nil && cur.Primary == l.Primary {
		return nil
	}
	return st.replica.ObserveEpoch(l.Epoch)
}

// growForLayout grows the local replica to a layout that says the volume
// is larger. The controller commits a larger size only once every replica
// in the write path holds it, so this is a replica that was out of the
// write path, or a layout that arrived before ExpandReplica; either way
// the new range is zeroes here, and whatever the primary wrote there
// reaches this replica through its resync. A replica larger than the
// layout is one whose expansion is not committed yet: it serves the
// layout's size.
func growForLayout(st volumeState, l replication.Layout) error {
	if l.Size <= st.replica.Size() {
		return nil
	}
	klog.InfoS("Growing replica to the layout's size", "volume", l.VolumeID, "from", st.replica.Size(), "to", l.Size, "epoch", l.Epoch)
	return st.replica.Grow(l.Size)
}

// checkLayoutFits refuses a layout older than what this node already
// knows.
func checkLayoutFits(st volumeState, l replication.Layout) error {
	if seen := st.replica.Epoch(); l.Epoch < seen {
		return fmt.Errorf("volume %s: layout epoch %d, replica has seen %d: %w", l.VolumeID, l.Epoch, seen, ErrStaleLayout)
	}
	cur := st.currentLayout()
	switch {
	case cur == nil:
		return nil
	case l.Epoch < cur.Epoch:
		return fmt.Errorf("volume %s: layout epoch %d, node has %d: %w", l.VolumeID, l.Epoch, cur.Epoch, ErrStaleLayout)
	case l.Epoch == cur.Epoch && !layoutsEqual(l, *cur):
		return fmt.Errorf("volume %s, epoch %d: %w", l.VolumeID, l.Epoch, ErrLayoutConflict)
	}
	return nil
}

func layoutsEqual(x, y replication.Layout) bool {
	return x.VolumeID == y.VolumeID && x.Size == y.Size && x.Epoch == y.Epoch &&
		x.Primary == y.Primary && slices.Equal(x.Replicas, y.Replicas) &&
		x.AttachmentGeneration == y.AttachmentGeneration
}

// servePrimary moves the running primary to l, or starts one. A primary
// that a newer epoch has fenced is replaced: it can serve no more, and l
// says this node is primary again.
func (a *Agent) servePrimary(st volumeState, l replication.Layout) error {
	if p := st.primary; p != nil {
		err := p.UpdateLayout(l)
		if err == nil {
			return drainStale(p, l)
		}
		if errors.Is(err, replication.ErrInvalidLayout) {
			return err
		}
		klog.InfoS("Replacing fenced primary", "volume", l.VolumeID, "node", a.cfg.NodeID, "epoch", l.Epoch, "err", err)
		a.stopPrimary(l.VolumeID, p, l.Epoch)
	}
	p, err := replication.NewPrimary(st.replica, l, a.primaryOptions())
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.primaries[l.VolumeID] = p
	a.mu.Unlock()
	klog.InfoS("Exporting volume over NBD", "volume", l.VolumeID, "node", a.cfg.NodeID, "epoch", l.Epoch)
	return nil
}

// staleDrainTimeout bounds how long SetLayout waits for the requests of
// fenced attachments; it is below the controller's default call timeout.
const staleDrainTimeout = 5 * time.Second

// drainStale waits until the requests that clients of older attachments
// had in progress when p learned l's generation are done, so that none of
// them lands after SetLayout returns and the controller's publish
// completes (I3). A timeout fails SetLayout; the controller retries, and
// the same layout drains again.
func drainStale(p *replication.Primary, l replication.Layout) error {
	ctx, cancel := context.WithTimeout(context.Background(), staleDrainTimeout)
	defer cancel()
	if err := p.DrainStale(ctx); err != nil {
		return fmt.Errorf("volume %s, epoch %d: %w", l.VolumeID, l.Epoch, err)
	}
	return nil
}

// stopPrimary stops p, the running primary of id if any: NBD clients of
// it see their requests fail.
func (a *Agent) stopPrimary(id string, p *replication.Primary, epoch uint64) {
	if p == nil {
		return
	}
	a.mu.Lock()
	if a.primaries[id] == p {
		delete(a.primaries, id)
	}
	a.mu.Unlock()
	p.Close()
	klog.InfoS("Stopped serving volume", "volume", id, "node", a.cfg.NodeID, "epoch", epoch)
}

func (a *Agent) recordLayout(l replication.Layout) {
	l.Replicas = slices.Clone(l.Replicas)
	a.mu.Lock()
	a.layouts[l.VolumeID] = l
	a.mu.Unlock()
	klog.V(2).InfoS("Recorded layout", "volume", l.VolumeID, "node", a.cfg.NodeID, "epoch", l.Epoch, "primary", l.Primary)
}
