package controller

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// VolumeRequest asks for a volume. The CSI edge has validated it.
type VolumeRequest struct {
	// Name is the CO's name, the key of idempotency.
	Name string
	// Size is the size to create; RequiredBytes and LimitBytes (0: no
	// limit) the range the caller accepts from an existing volume.
	Size          int64
	RequiredBytes int64
	LimitBytes    int64
	// Replicas and MinInSyncReplicas come from the StorageClass.
	Replicas          int
	MinInSyncReplicas int
	// TopologyKey names the failure domain replicas are spread over.
	TopologyKey string
	// Parameters are kept in the record as they are.
	Parameters map[string]string
	// Capabilities describes the requested volume capabilities in a
	// canonical form; a repeated request must describe them the same way.
	Capabilities []string
	// Requisite and Preferred are the accessibility requirements, as in
	// Placement.
	Requisite []map[string]string
	Preferred []map[string]string
}

// fingerprint digests what a repeated request must repeat exactly:
// capabilities and parameters. The size is compared as a range, and the
// topology not at all: a volume is reachable from every node.
func (r VolumeRequest) fingerprint() string {
	caps := slices.Sorted(slices.Values(r.Capabilities))
	b, _ := json.Marshal(struct {
		Caps   []string
		Params map[string]string
	}{caps, r.Parameters}) // json sorts map keys
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// CreateVolume creates the volume named req.Name, or returns the one that
// exists under that name if it is compatible with req (same fingerprint,
// size within the range); an incompatible one is ErrAlreadyExistsDifferent.
//
// The record is stored first, with the placement and the first layout
// (epoch 1, every replica InSync: an empty volume has nothing to copy),
// so that the name is claimed atomically and a crash leaves nothing a
// retry or DeleteVolume cannot find. Then each node creates its replica
// and gets the layout, the primary last. If a node fails, the replicas
// and the record are removed again and the error returned.
func (c *Controller) CreateVolume(ctx context.Context, req VolumeRequest) (store.Volume, error) {
	v, err := c.store.GetVolumeByName(ctx, req.Name)
	switch {
	case err == nil:
		return c.existing(ctx, v, req)
	case !errors.Is(err, store.ErrNotFound):
		return store.Volume{}, fmt.Errorf("create volume %q: %w", req.Name, err)
	}
	v, err = c.newRecord(ctx, req)
	if errors.Is(err, store.ErrExists) {
		return c.CreateVolume(ctx, req) // lost a race for the name
	}
	if err != nil {
		return store.Volume{}, err
	}
	defer c.created(v.ID)
	if err := c.provision(ctx, v); err != nil {
		c.rollback(v)
		return store.Volume{}, err
	}
	c.markReady(v.ID)
	klog.InfoS("Volume created", "volume", v.ID, "name", v.Name, "size", v.Size,
		"primary", v.Layout.Primary, "epoch", v.Layout.Epoch, "replicas", zonesOf(v.Layout))
	return v, nil
}

// existing answers a repeated CreateVolume.
func (c *Controller) existing(ctx context.Context, v store.Volume, req VolumeRequest) (store.Volume, error) {
	if v.Fingerprint != req.fingerprint() {
		return store.Volume{}, fmt.Errorf("volume %q (%s): capabilities or parameters differ: %w", req.Name, v.ID, ErrAlreadyExistsDifferent)
	}
	if v.Size < req.RequiredBytes || (req.LimitBytes > 0 && v.Size > req.LimitBytes) {
		return store.Volume{}, fmt.Errorf("volume %q (%s) has %d bytes, outside [%d, %d]: %w",
			req.Name, v.ID, v.Size, req.RequiredBytes, req.LimitBytes, ErrAlreadyExistsDifferent)
	}
	if c.isReady(v.ID) {
		return v, nil
	}
	// A create that this process did not see finish (it failed, or ran
	// before a restart or a change of leader): make sure every replica in
	// the write path is there and the primary serves. Every step is
	// idempotent on the nodes. The epoch says nothing here: the repair
	// loop may have changed the layout of a volume whose replicas were
	// never made.
	if !c.creatingNow(v.ID) {
		return store.Volume{}, fmt.Errorf("volume %q (%s) is being created: %w", req.Name, v.ID, ErrBusy)
	}
	defer c.created(v.ID)
	if err := c.provisionExisting(ctx, v); err != nil {
		return store.Volume{}, err
	}
	c.markReady(v.ID)
	return v, nil
}

// newRecord places the replicas and stores the volume record.
func (c *Controller) newRecord(ctx context.Context, req VolumeRequest) (store.Volume, error) {
	placed, err := Place(c.candidates(), Placement{
		Size: req.Size, Replicas: req.Replicas, TopologyKey: req.TopologyKey,
		Requisite: req.Requisite, Preferred: req.Preferred,
	})
	if err != nil {
		return store.Volume{}, fmt.Errorf("create volume %q: %w", req.Name, err)
	}
	id := store.NewVolumeID()
	v := store.Volume{
		ID: id, Name: req.Name, Size: req.Size, Parameters: maps.Clone(req.Parameters),
		Fingerprint: req.fingerprint(), MinInSyncReplicas: req.MinInSyncReplicas,
		Layout:  c.firstLayout(id, req, placed),
		Created: c.opts.Now(),
	}
	c.mu.Lock()
	c.creating[id] = true // before the record exists: the repair loop leaves it alone
	c.mu.Unlock()
	v, err = c.store.CreateVolume(ctx, v)
	if err != nil {
		c.created(id)
		return store.Volume{}, fmt.Errorf("create volume %q: %w", req.Name, err)
	}
	for _, n := range placed {
		c.reserve(n.NodeID, req.Size)
	}
	return v, nil
}

// firstLayout is epoch 1 with every placed replica InSync, the first
// primary.
func (c *Controller) firstLayout(id string, req VolumeRequest, placed []Candidate) replication.Layout {
	l := replication.Layout{VolumeID: id, Size: req.Size, Epoch: 1, Primary: placed[0].NodeID,
		MinInSync: req.MinInSyncReplicas}
	key := cmp.Or(req.TopologyKey, api.ZoneTopologyKey)
	for _, n := range placed {
		l.Replicas = append(l.Replicas, replication.ReplicaInfo{
			NodeID: n.NodeID, Zone: n.Topology[key], Address: c.dataAddress(n.NodeID), State: replication.InSync,
		})
	}
	return l
}

func (c *Controller) dataAddress(nodeID string) string {
	c.members.mu.Lock()
	defer c.members.mu.Unlock()
	if n, ok := c.members.nodes[nodeID]; ok {
		return n.DataAddress
	}
	return ""
}

// candidates are the live nodes, as Place takes them.
func (c *Controller) candidates() []Candidate {
	var out []Candidate
	for _, n := range c.liveNodes() {
		out = append(out, Candidate{NodeID: n.NodeID, Topology: n.Topology, Capacity: n.CapacityBytes, Free: n.FreeBytes})
	}
	return out
}

// provision creates every replica and hands every node the layout.
func (c *Controller) provision(ctx context.Context, v store.Volume) error {
	for _, r := range v.Layout.Replicas {
		if err := c.createReplica(ctx, r.NodeID, v.ID, v.Size); err != nil {
			return err
		}
	}
	return c.setLayoutEverywhere(ctx, v.Layout)
}

// provisionExisting creates the replicas of a stored volume that are in
// the write path, and gives the layout to its primary.
func (c *Controller) provisionExisting(ctx context.Context, v store.Volume) error {
	for _, r := range v.Layout.Replicas {
		if r.State == replication.Faulted {
			continue
		}
		if err := c.createReplica(ctx, r.NodeID, v.ID, v.Size); err != nil {
			return err
		}
	}
	return c.confirm(ctx, v.Layout)
}

// rollback undoes a failed create: it deletes the replicas it can reach
// and then the record, so that a retry places the volume afresh instead of
// on the node that failed.
//
// Known shortcoming: a replica the failed node made anyway (a call that
// timed out after it took effect) is left behind there.
func (c *Controller) rollback(v store.Volume) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.NodeCallTimeout)
	defer cancel()
	for _, node := range replicaNodes(v.Layout) {
		if err := c.deleteReplica(ctx, node, v.ID); err != nil {
			klog.ErrorS(err, "Rolling back a failed create left a replica", "volume", v.ID, "node", node)
		}
	}
	for {
		err := c.store.DeleteVolume(ctx, v.ID, v.Revision)
		if !errors.Is(err, store.ErrConflict) {
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				klog.ErrorS(err, "Rolling back a failed create left the record; a repeated CreateVolume provisions it, DeleteVolume removes it", "volume", v.ID)
			}
			return
		}
		if v, err = c.store.GetVolume(ctx, v.ID); err != nil {
			return
		}
	}
}

// creatingNow marks the volume as being provisioned by this process, so
// that the repair loop leaves it alone, unless it is already.
func (c *Controller) creatingNow(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.creating[id] {
		return false
	}
	c.creating[id] = true
	return true
}

// created ends what creatingNow or newRecord began.
func (c *Controller) created(id string) {
	c.mu.Lock()
	delete(c.creating, id)
	c.mu.Unlock()
}

func (c *Controller) isCreating(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.creating[id]
}

// DeleteVolume removes every replica of the volume and then its record.
// An unknown id succeeds. Replicas on nodes known to be dead (see
// knownDead) are left behind and logged; any other node that does not
// answer fails the call, to be retried.
//
// Known shortcoming: nothing collects those left-behind replicas yet; a
// node that comes back keeps them until an operator deletes them.
func (c *Controller) DeleteVolume(ctx context.Context, id string) error {
	for {
		v, err := c.store.GetVolume(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete volume %s: %w", id, err)
		}
		if v.Attachment.Attached() {
			return fmt.Errorf("delete volume %s: %w: published to node %s", id, ErrVolumeInUse, v.Attachment.NodeID)
		}
		if err := c.deleteReplicas(ctx, v); err != nil {
			return err
		}
		err = c.store.DeleteVolume(ctx, id, v.Revision)
		if err == nil || errors.Is(err, store.ErrNotFound) {
			c.forget(id)
			klog.InfoS("Volume deleted", "volume", id, "name", v.Name, "epoch", v.Layout.Epoch)
			return nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("delete volume %s: %w", id, err)
		}
	}
}

// deleteReplicas stops the primary first, so that no write lands while the
// other replicas go.
func (c *Controller) deleteReplicas(ctx context.Context, v store.Volume) error {
	for _, node := range replicaNodes(v.Layout) {
		if c.knownDead(node) {
			klog.InfoS("Leaving the replica of a deleted volume on a dead node", "volume", v.ID, "node", node)
			continue
		}
		if err := c.deleteReplica(ctx, node, v.ID); err != nil {
			return err
		}
		c.release(node, v.Size)
	}
	return nil
}

// replicaNodes lists the nodes of l, the primary first.
func replicaNodes(l replication.Layout) []string {
	out := []string{l.Primary}
	for _, r := range l.Replicas {
		if r.NodeID != l.Primary {
			out = append(out, r.NodeID)
		}
	}
	return out
}

// GetVolume returns the volume's record.
func (c *Controller) GetVolume(ctx context.Context, id string) (store.Volume, error) {
	v, err := c.store.GetVolume(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Volume{}, fmt.Errorf("volume %s: %w", id, ErrVolumeNotFound)
	}
	return v, err
}

// ListVolumes returns one page of volumes; see store.ListOptions.
func (c *Controller) ListVolumes(ctx context.Context, opts store.ListOptions) (store.VolumePage, error) {
	return c.store.ListVolumes(ctx, opts)
}

func (c *Controller) markReady(id string) {
	c.mu.Lock()
	c.ready[id] = true
	c.mu.Unlock()
}

func (c *Controller) isReady(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready[id]
}

// forget drops what this process remembers of a deleted volume, so that
// the repair state does not grow with every volume ever created.
func (c *Controller) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.ready, id)
	delete(c.confirmedEpochs, id)
	maps.DeleteFunc(c.faultedAt, func(k replicaKey, _ time.Time) bool { return k.volume == id })
	maps.DeleteFunc(c.resumedAt, func(k replicaKey, _ time.Time) bool { return k.volume == id })
	maps.DeleteFunc(c.logged, func(k replicaKey, _ bool) bool { return k.volume == id })
}

// zonesOf describes where the replicas are, for logs.
func zonesOf(l replication.Layout) []string {
	out := make([]string, 0, len(l.Replicas))
	for _, r := range l.Replicas {
		out = append(out, r.NodeID+"@"+r.Zone)
	}
	return out
}
