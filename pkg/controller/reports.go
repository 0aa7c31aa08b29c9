package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// errStaleReport stops a BumpEpoch whose report an earlier change made
// moot; the caller answers with the current layout.
var errStaleReport = errors.New("stale report")

// ReplicaFaulted takes a replica out of the write path (invariant I2): it
// persists the layout with the replica Faulted and a higher epoch, pushes
// it to the other replica nodes and returns it, and only then may the
// primary acknowledge writes the replica missed. A report made at an
// older epoch, or about a replica already out of InSync and Syncing, gets
// the current layout unchanged: the primary acts on that and reports again
// if it still needs to.
func (c *Controller) ReplicaFaulted(ctx context.Context, volumeID string, epoch uint64, nodeID, cause string) (replication.Layout, error) {
	l, changed, err := c.changeReplica(ctx, volumeID, epoch, nodeID, func(r *replication.ReplicaInfo) bool {
		if r.State == replication.Faulted {
			return false
		}
		r.State = replication.Faulted
		return true
	})
	if err != nil {
		return replication.Layout{}, fmt.Errorf("replica %s of %s faulted: %w", nodeID, volumeID, err)
	}
	klog.InfoS("Replica fault report answered", "volume", volumeID, "node", nodeID,
		"reportEpoch", epoch, "epoch", l.Epoch, "cause", cause)
	if changed {
		c.emitLayout(ctx, volumeID, ReasonDegraded, fmt.Sprintf("replica %s left the write path: %s; %d of %d in sync",
			nodeID, cause, InSyncCount(l), len(l.Replicas)), true)
	}
	return l, nil
}

// ReplicaSynced counts a replica that finished its copy (invariant I5):
// a Syncing replica becomes InSync in a layout persisted with a higher
// epoch, pushed to the other replica nodes and returned. A report at an
// older epoch, or about a replica that is not Syncing, gets the current
// layout unchanged.
func (c *Controller) ReplicaSynced(ctx context.Context, volumeID string, epoch uint64, nodeID string) (replication.Layout, error) {
	l, changed, err := c.changeReplica(ctx, volumeID, epoch, nodeID, func(r *replication.ReplicaInfo) bool {
		if r.State != replication.Syncing {
			return false
		}
		r.State = replication.InSync
		return true
	})
	if err != nil {
		return replication.Layout{}, fmt.Errorf("replica %s of %s synced: %w", nodeID, volumeID, err)
	}
	klog.InfoS("Replica synced report answered", "volume", volumeID, "node", nodeID, "reportEpoch", epoch, "epoch", l.Epoch)
	if changed {
		c.emitLayout(ctx, volumeID, ReasonResyncFinished, fmt.Sprintf("replica %s caught up; %d of %d in sync",
			nodeID, InSyncCount(l), len(l.Replicas)), false)
	}
	return l, nil
}

// changeReplica applies change to the reported replica under a bumped
// epoch, if the report is current and change says it changed something;
// it returns the layout to answer with, and whether it changed it.
func (c *Controller) changeReplica(ctx context.Context, volumeID string, epoch uint64, nodeID string,
	change func(*replication.ReplicaInfo) bool) (replication.Layout, bool, error) {
	v, err := store.BumpEpoch(ctx, c.store, volumeID, func(v *store.Volume) error {
		if err := checkReport(v.Layout, epoch, nodeID); err != nil {
			return err
		}
		r := replicaOf(&v.Layout, nodeID)
		if !change(r) {
			return errStaleReport
		}
		return nil
	})
	switch {
	case errors.Is(err, errStaleReport):
		cur, err := c.GetVolume(ctx, volumeID)
		return cur.Layout, false, err
	case err != nil:
		return replication.Layout{}, false, c.volumeErr("report on", volumeID, err)
	}
	klog.InfoS("Layout changed", "volume", volumeID, "node", nodeID, "epoch", v.Layout.Epoch,
		"primary", v.Layout.Primary, "replicas", statesOf(v.Layout))
	c.pushLayout(v.Layout)
	return v.Layout, true, nil
}

// checkReport refuses reports that cannot be acted on, and marks stale the
// ones an earlier change has overtaken.
func checkReport(l replication.Layout, epoch uint64, nodeID string) error {
	switch {
	case epoch > l.Epoch:
		return fmt.Errorf("%w: report at epoch %d, record at %d", ErrEpochAhead, epoch, l.Epoch)
	case epoch < l.Epoch:
		return errStaleReport
	case replicaOf(&l, nodeID) == nil:
		return fmt.Errorf("%w: %s holds no replica", ErrInvalidReport, nodeID)
	case nodeID == l.Primary:
		return fmt.Errorf("%w: %s is the primary", ErrInvalidReport, nodeID)
	}
	return nil
}

func replicaOf(l *replication.Layout, nodeID string) *replication.ReplicaInfo {
	for i := range l.Replicas {
		if l.Replicas[i].NodeID == nodeID {
			return &l.Replicas[i]
		}
	}
	return nil
}

func statesOf(l replication.Layout) []string {
	out := make([]string, 0, len(l.Replicas))
	for _, r := range l.Replicas {
		out = append(out, r.NodeID+"="+string(r.State))
	}
	return out
}

// InSyncCount is how many replicas of l are InSync.
func InSyncCount(l replication.Layout) int {
	n := 0
	for _, r := range l.Replicas {
		if r.State == replication.InSync {
			n++
		}
	}
	return n
}

// emitLayout records an event about the volume as it is stored now.
func (c *Controller) emitLayout(ctx context.Context, volumeID, reason, msg string, warning bool) {
	v, err := c.store.GetVolume(ctx, volumeID)
	if err != nil {
		return
	}
	c.emit(v, reason, msg, warning)
}
