package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// ExpandVolume grows the volume to size bytes, a multiple of 4096 the
// caller chose, while it may be in use, and returns the record. A volume
// that holds size bytes or more already is returned as it is: expansion
// is idempotent, and never shrinks.
//
// The order keeps every write inside what every replica in the write path
// holds:
//  1. every InSync or Syncing replica grows (ExpandReplica); a primary
//     keeps serving its layout's size;
//  2. the record takes the new size with a new layout epoch, in one
//     compare-and-swap; a replica added meanwhile is grown on the retry;
//  3. the primary gets the layout and serves the new size.
//
// A Faulted replica is grown when it resumes, before it is copied what it
// missed. When step 3 fails the volume is expanded but not yet served at
// its size: the repair loop sends the layout again, and so does a
// repeated call.
func (c *Controller) ExpandVolume(ctx context.Context, id string, size int64) (store.Volume, error) {
	if size <= 0 || size%4096 != 0 {
		return store.Volume{}, fmt.Errorf("expand volume %s to %d bytes: %w: not a positive multiple of 4096", id, size, ErrInvalid)
	}
	unlock := c.lockVolume(id) // no repair step changes the replicas meanwhile
	defer unlock()
	for {
		v, err := c.store.GetVolume(ctx, id)
		if err != nil {
			return store.Volume{}, c.volumeErr("expand", id, err)
		}
		if v.Size >= size {
			if c.confirmed(id) != v.Layout.Epoch {
				if err := c.confirm(ctx, v.Layout); err != nil {
					return store.Volume{}, fmt.Errorf("expand volume %s: serve the new size: %w", id, err)
				}
			}
			return v, nil
		}
		grow := size - v.Size
		if err := c.checkRoomToGrow(v, grow); err != nil {
			return store.Volume{}, err
		}
		for _, r := range v.Layout.Replicas {
			if r.State == replication.Faulted {
				continue
			}
			if err := c.expandReplica(ctx, r.NodeID, id, size); err != nil {
				return store.Volume{}, fmt.Errorf("expand volume %s to %d bytes: %w", id, size, err)
			}
		}
		next := v
		next.Size, next.Layout.Size = size, size
		next.Layout.Epoch++
		next, err = c.store.UpdateVolume(ctx, next)
		if errors.Is(err, store.ErrConflict) {
			continue // the layout changed: grow whatever it holds now
		}
		if err != nil {
			return store.Volume{}, c.volumeErr("expand", id, err)
		}
		for _, r := range v.Layout.Replicas {
			c.reserve(r.NodeID, grow)
		}
		klog.InfoS("Volume expanded", "volume", id, "from", v.Size, "to", size, "epoch", next.Layout.Epoch)
		c.emit(next, ReasonExpanded, fmt.Sprintf("expanded from %d to %d bytes", v.Size, size), false)
		if err := c.confirm(ctx, next.Layout); err != nil {
			return store.Volume{}, fmt.Errorf("expand volume %s: serve the new size: %w", id, err)
		}
		return next, nil
	}
}

// checkRoomToGrow refuses an expansion a replica's live node has no room
// for. A node the controller has not heard from is not refused here: its
// ExpandReplica answers for itself.
func (c *Controller) checkRoomToGrow(v store.Volume, grow int64) error {
	for _, n := range c.Nodes() {
		r := replicaOf(&v.Layout, n.NodeID)
		if r == nil || r.State == replication.Faulted || !n.Live {
			continue
		}
		if n.FreeBytes < grow {
			return fmt.Errorf("expand volume %s by %d bytes: %w: node %s has %d bytes free",
				v.ID, grow, ErrNoPlacement, n.NodeID, n.FreeBytes)
		}
	}
	return nil
}

func (c *Controller) expandReplica(ctx context.Context, nodeID, volumeID string, size int64) error {
	return c.callNode(ctx, nodeID, "expand replica of "+volumeID, func(ctx context.Context, cl apiv1.NodeClient) error {
		_, err := cl.ExpandReplica(ctx, &apiv1.ExpandReplicaRequest{VolumeId: volumeID, SizeBytes: size})
		return err
	})
}
