package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// nodeClient returns a cached client of the node's Node service.
func (c *Controller) nodeClient(ctx context.Context, nodeID string) (apiv1.NodeClient, error) {
	addr, err := c.apiAddress(ctx, nodeID)
	if err != nil {
		return nil, err
	}
	key := nodeID + "@" + addr
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[key]; ok {
		return cl, nil
	}
	cl, err := c.opts.DialNode(nodeID, addr)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w: %w", nodeID, ErrNodeUnavailable, err)
	}
	c.clients[key] = cl
	return cl, nil
}

// callNode runs one call on a node within NodeCallTimeout. A failed call
// wraps ErrNodeUnavailable: the node's own code is for its logs, since the
// caller's request was fine and a retry may succeed.
func (c *Controller) callNode(ctx context.Context, nodeID, what string, call func(context.Context, apiv1.NodeClient) error) error {
	cl, err := c.nodeClient(ctx, nodeID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.NodeCallTimeout)
	defer cancel()
	if err := call(ctx, cl); err != nil {
		return fmt.Errorf("%s on node %s: %w: %w", what, nodeID, ErrNodeUnavailable, err)
	}
	return nil
}

func (c *Controller) createReplica(ctx context.Context, nodeID, volumeID string, size int64) error {
	return c.callNode(ctx, nodeID, "create replica of "+volumeID, func(ctx context.Context, cl apiv1.NodeClient) error {
		_, err := cl.CreateReplica(ctx, &apiv1.CreateReplicaRequest{VolumeId: volumeID, SizeBytes: size})
		return err
	})
}

// deleteReplica removes the node's replica; the Node service answers OK
// when there is none.
func (c *Controller) deleteReplica(ctx context.Context, nodeID, volumeID string) error {
	return c.callNode(ctx, nodeID, "delete replica of "+volumeID, func(ctx context.Context, cl apiv1.NodeClient) error {
		_, err := cl.DeleteReplica(ctx, &apiv1.DeleteReplicaRequest{VolumeId: volumeID})
		return err
	})
}

func (c *Controller) setLayout(ctx context.Context, nodeID string, l replication.Layout) error {
	return c.callNode(ctx, nodeID, fmt.Sprintf("set layout of %s at epoch %d", l.VolumeID, l.Epoch),
		func(ctx context.Context, cl apiv1.NodeClient) error {
			_, err := cl.SetLayout(ctx, &apiv1.SetLayoutRequest{Layout: api.LayoutToProto(l)})
			return err
		})
}

// setLayoutEverywhere gives the layout to every replica node, the primary
// last so that it connects to replicas that already know the volume.
func (c *Controller) setLayoutEverywhere(ctx context.Context, l replication.Layout) error {
	nodes := replicaNodes(l)
	for _, node := range append(nodes[1:], nodes[0]) {
		if err := c.setLayout(ctx, node, l); err != nil {
			return err
		}
	}
	return nil
}

// resendLayouts gives a node that has just registered the current layout
// of every volume it holds a replica of. A restarted agent keeps no
// layouts: without this, a primary that restarts would serve nothing
// until the next change of its volumes. Best effort, like pushLayout.
func (c *Controller) resendLayouts(nodeID string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.PushTimeout*10)
	defer cancel()
	opts := store.ListOptions{Limit: 100}
	for {
		page, err := c.store.ListVolumes(ctx, opts)
		if err != nil {
			klog.ErrorS(err, "Listing volumes to resend layouts failed", "node", nodeID)
			return
		}
		for _, v := range page.Volumes {
			c.resendLayout(ctx, nodeID, v.Layout)
		}
		if page.Next == "" {
			break
		}
		opts.StartAfter = page.Next
	}
	c.collectOrphans(ctx, nodeID)
}

// collectOrphans deletes the node's replicas of volumes that no longer
// list it: deleted volumes, and replicas removed from a layout while the
// node was down. A replica is only ever created after the record lists
// it, so one that exists while the record, read after it, does not list
// it is an orphan.
func (c *Controller) collectOrphans(ctx context.Context, nodeID string) {
	var list *apiv1.ListVolumesResponse
	err := c.callNode(ctx, nodeID, "list replicas", func(ctx context.Context, cl apiv1.NodeClient) error {
		var err error
		list, err = cl.ListVolumes(ctx, &apiv1.ListVolumesRequest{})
		return err
	})
	if err != nil {
		klog.InfoS("Listing a node's replicas failed; orphans stay until it registers again", "node", nodeID, "err", err)
		return
	}
	for _, rep := range list.GetVolumes() {
		id := rep.GetVolumeId()
		v, err := c.store.GetVolume(ctx, id)
		switch {
		case err == nil && replicaOf(&v.Layout, nodeID) != nil:
			continue
		case err != nil && !errors.Is(err, store.ErrNotFound):
			klog.InfoS("Reading a volume to collect orphans failed", "volume", id, "node", nodeID, "err", err)
			continue
		}
		if err := c.deleteReplica(ctx, nodeID, id); err != nil {
			klog.InfoS("Deleting an orphan replica failed", "volume", id, "node", nodeID, "err", err)
			continue
		}
		klog.InfoS("Deleted orphan replica", "volume", id, "node", nodeID)
	}
}

func (c *Controller) resendLayout(ctx context.Context, nodeID string, l replication.Layout) {
	if !slices.ContainsFunc(l.Replicas, func(r replication.ReplicaInfo) bool { return r.NodeID == nodeID }) {
		return
	}
	if err := c.setLayout(ctx, nodeID, l); err != nil {
		klog.InfoS("Resending layout failed", "volume", l.VolumeID, "node", nodeID, "epoch", l.Epoch, "err", err)
		return
	}
	klog.V(2).InfoS("Resent layout", "volume", l.VolumeID, "node", nodeID, "epoch", l.Epoch)
}

// pushLayout tells the replica nodes other than the primary about a new
// layout, in parallel and within PushTimeout. It is best effort: the
// persisted record is what counts, the primary gets the layout in its
// report's answer, and a node that misses it refuses nothing that matters
// (it learns newer epochs from the primary's frames).
func (c *Controller) pushLayout(l replication.Layout) {
	var wg sync.WaitGroup
	for _, r := range l.Replicas {
		if r.NodeID == l.Primary {
			continue
		}
		wg.Add(1)
		go func(node string) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.PushTimeout)
			defer cancel()
			if err := c.setLayout(ctx, node, l); err != nil {
				klog.V(2).InfoS("Pushing layout failed", "volume", l.VolumeID, "node", node, "epoch", l.Epoch, "err", err)
			}
		}(r.NodeID)
	}
	wg.Wait()
}
