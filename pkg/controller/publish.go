package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/store"
)

// errUnchanged stops a store.Mutate that has nothing to write.
var errUnchanged = errors.New("unchanged")

// Publish records that the volume is attached to the node and returns the
// record. A new attachment bumps Attachment.Generation (invariant I3), so
// a frontend left on a previous node can be told from the current one.
// Publishing again to the same node changes nothing. Every access mode
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
	v, err := store.Mutate(ctx, c.store, volumeID, func(v *store.Volume) error {
		switch a := v.Attachment; {
		case a.NodeID == nodeID:
			return errUnchanged
		case a.Attached():
			return fmt.Errorf("%w: %s", ErrPublishedElsewhere, a.NodeID)
		}
		v.Attachment.Attach(nodeID)
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return c.GetVolume(ctx, volumeID)
	}
	if err != nil {
		return store.Volume{}, c.volumeErr("publish", volumeID, err)
	}
	klog.InfoS("Volume published", "volume", volumeID, "node", nodeID,
		"generation", v.Attachment.Generation, "epoch", v.Layout.Epoch)
	return v, nil
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
