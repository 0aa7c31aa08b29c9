package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// errUnchanged stops a store.Mutate that has nothing to write.
var errUnchanged = errors.New("unchanged")

// Publish records that the volume is attached to the node and returns the
// record. A new attachment bumps Attachment.Generation and, with a new
// epoch, the layout's AttachmentGeneration (invariant I3); Publish returns
// only once the primary has that layout, so from then on it refuses a
// frontend left on a previous node. Publishing again to the same node
// changes nothing but gives the primary the layout again. Every access mode
// Trireme supports is single-node: a volume published to another node is
// ErrPublishedElsewhere until it is unpublished there.
//
// Known shortcoming: the read-only flag is not recorded, so a second
// publish to the same node with the other flag is not refused.
func (c *Controller) Publish(ctx context.Context, volumeID, nodeID string) (store.Volume, error) {
	known, err := c.nodeKnown(ctx, nodeID)
	if err != nil {
		return store.Volume{}, err
	}
	if !known {
		return store.Volume{}, fmt.Errorf("publish %s: node %s: %w", volumeID, nodeID, ErrNodeNotFound)
	}
	v, err := store.BumpEpoch(ctx, c.store, volumeID, func(v *store.Volume) error {
		switch a := v.Attachment; {
		case a.NodeID == nodeID:
			return errUnchanged
		case a.Attached():
			return fmt.Errorf("%w: %s", ErrPublishedElsewhere, a.NodeID)
		}
		v.Attachment.Attach(nodeID)
		v.Layout.AttachmentGeneration = v.Attachment.Generation
		return nil
	})
	if errors.Is(err, errUnchanged) {
		v, err = c.GetVolume(ctx, volumeID)
	} else if err == nil {
		klog.InfoS("Volume published", "volume", volumeID, "node", nodeID,
			"generation", v.Attachment.Generation, "epoch", v.Layout.Epoch)
	}
	if err != nil {
		return store.Volume{}, c.volumeErr("publish", volumeID, err)
	}
	if err := c.fenceOldAttachments(ctx, v.Layout); err != nil {
		return store.Volume{}, fmt.Errorf("publish %s: %w", volumeID, err)
	}
	return v, nil
}

// fenceOldAttachments gives the primary the layout that carries the
// current attachment generation, so that it refuses every frontend of an
// older one, then tells the other replica nodes (best effort: they learn
// the epoch from the primary's frames too). A layout without a generation
// (a volume never published since it had one) fences nothing.
func (c *Controller) fenceOldAttachments(ctx context.Context, l replication.Layout) error {
	if l.AttachmentGeneration == 0 {
		return nil
	}
	if err := c.setLayout(ctx, l.Primary, l); err != nil {
		return err
	}
	c.pushLayout(l)
	return nil
}

// Unpublish records that the volume is no longer attached to the node;
// an empty nodeID detaches it from any node. Unknown volumes, and volumes
// attached elsewhere or nowhere, succeed unchanged.
func (c *Controller) Unpublish(ctx context.Context, volumeID, nodeID string) error {
	v, err := store.Mutate(ctx, c.store, volumeID, func(v *store.Volume) error {
		a := v.Attachment
		if !a.Attached() || (nodeID != "" && a.NodeID != nodeID) {
			return errUnchanged
		}
		v.Attachment.Detach()
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged), errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("unpublish %s: %w", volumeID, err)
	}
	klog.InfoS("Volume unpublished", "volume", volumeID, "node", nodeID, "generation", v.Attachment.Generation)
	return nil
}

// volumeErr wraps a store error of an operation on a volume, turning
// store.ErrNotFound into ErrVolumeNotFound.
func (c *Controller) volumeErr(op, volumeID string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s %s: %w", op, volumeID, ErrVolumeNotFound)
	}
	return fmt.Errorf("%s %s: %w", op, volumeID, err)
}
