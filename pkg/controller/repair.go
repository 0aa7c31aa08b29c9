package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// Defaults of the repair loop's options.
const (
	DefaultRepairInterval = 250 * time.Millisecond
	DefaultResumeWindow   = 10 * time.Minute
	// DefaultReplicas is the replica count of a volume whose parameters
	// do not name one.
	DefaultReplicas = 3
	// resumeBackoff spaces attempts to bring the same replica back.
	resumeBackoff = 3 * time.Second
	// repairWorkers bounds the volumes repaired at once.
	repairWorkers = 32
	// collectEvery spaces the garbage collections of a store that
	// implements store.Collector, and collectAge is how old an object
	// must be to be judged.
	collectEvery = 30 * time.Second
	collectAge   = time.Minute
)

// errNoChange stops a layout change whose reason went away when the
// record was read again.
var errNoChange = errors.New("no change needed")

// Run repairs volumes until ctx ends: every RepairInterval it looks at
// each volume and takes the first step it needs, in this order:
//
//  1. the primary's node is dead: promote an InSync replica on a live
//     node, preferring a zone with no dead node (I4), under a new epoch;
//  2. the primary has not confirmed the current layout: send it again,
//     and go on;
//  3. an InSync or Syncing replica's node is dead: take it out of the
//     write path (I2);
//  4. a Faulted replica's node is live again within ResumeWindow: make it
//     Syncing, so it catches up (only on what it missed, when its primary
//     tracked it);
//  5. fewer replicas than the volume asks for are InSync or Syncing: place
//     a new one, in a zone without one where a zone has room (I6);
//  6. a zone with room holds none while another holds two: place one there;
//  7. the volume has its replicas InSync: remove Faulted replicas and any
//     surplus from a zone that holds two.
//
// Each step is one compare-and-swap with a higher epoch (I3); the next
// step waits for the next pass. Only one Run may act on a store at a time
// (the leader).
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.RepairInterval)
	defer t.Stop()
	klog.InfoS("Repairing volumes", "interval", c.opts.RepairInterval, "heartbeatTimeout", c.opts.HeartbeatTimeout,
		"resumeWindow", c.opts.ResumeWindow)
	var lastCollect time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.repairPass(ctx, false)
		if col, ok := c.store.(store.Collector); ok && time.Since(lastCollect) >= collectEvery {
			lastCollect = time.Now()
			if _, err := col.CollectGarbage(ctx, collectAge); err != nil && ctx.Err() == nil {
				klog.InfoS("Collecting objects left by interrupted creates failed; will retry", "err", err)
			}
		}
	}
}

// RepairOnce runs one pass of Run over every volume, a few at a time, and
// waits for it.
func (c *Controller) RepairOnce(ctx context.Context) { c.repairPass(ctx, true) }

// repairPass starts a repair of every volume not being repaired already.
// Run does not wait for them: a volume whose node is slow to answer must
// not hold back the failover of another.
func (c *Controller) repairPass(ctx context.Context, wait bool) {
	var wg sync.WaitGroup
	opts := store.ListOptions{Limit: 200}
	for {
		page, err := c.store.ListVolumes(ctx, opts)
		if err != nil {
			klog.ErrorS(err, "Listing volumes to repair failed")
			break
		}
		for _, v := range page.Volumes {
			if !c.startRepair(v.ID) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.endRepair(v.ID)
				if err := c.repairVolume(ctx, v); err != nil && ctx.Err() == nil {
					klog.InfoS("Repair step failed; will retry", "volume", v.ID, "err", err)
				}
			}()
		}
		if page.Next == "" {
			break
		}
		opts.StartAfter = page.Next
	}
	if wait {
		wg.Wait()
	}
}

// startRepair claims the volume for one repair, unless one runs already
// or repairWorkers are busy.
func (c *Controller) startRepair(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.repairing[id] || len(c.repairing) >= repairWorkers {
		return false
	}
	c.repairing[id] = true
	return true
}

func (c *Controller) endRepair(id string) {
	c.mu.Lock()
	delete(c.repairing, id)
	c.mu.Unlock()
}

// health is what a repair pass knows of the nodes.
type health struct {
	c     *Controller
	nodes map[string]NodeStatus
}

func (c *Controller) health() health {
	h := health{c: c, nodes: map[string]NodeStatus{}}
	for _, n := range c.Nodes() {
		h.nodes[n.NodeID] = n
	}
	return h
}

func (h health) live(id string) bool { return h.nodes[id].Live }

// dead is knownDead: silent past the heartbeat timeout, or never heard
// of within the grace a new controller gives nodes to register.
func (h health) dead(id string) bool {
	if n, ok := h.nodes[id]; ok {
		return !n.Live
	}
	return h.c.opts.Now().Sub(h.c.started) > h.c.opts.StartupGrace
}

// zoneHealthy says no registered node of the zone is dead.
func (h health) zoneHealthy(zone string) bool {
	for _, n := range h.nodes {
		if n.Zone == zone && h.dead(n.NodeID) {
			return false
		}
	}
	return true
}

func (c *Controller) repairVolume(ctx context.Context, v store.Volume) error {
	unlock := c.lockVolume(v.ID)
	defer unlock()
	if c.isCreating(v.ID) {
		return nil // CreateVolume makes its replicas and hands out its layout
	}
	h := c.health()
	l := v.Layout
	switch {
	case h.dead(l.Primary):
		return c.failover(ctx, v, h)
	case !h.live(l.Primary):
		return nil // a restarted controller waits for the primary to register
	case c.confirmed(v.ID) != l.Epoch:
		if err := c.confirm(ctx, l); err != nil {
			return err
		}
	}
	if r := firstReplica(l, func(r replication.ReplicaInfo) bool {
		return r.NodeID != l.Primary && r.State != replication.Faulted && h.dead(r.NodeID)
	}); r != nil {
		return c.faultDead(ctx, v, h)
	}
	c.noteFaults(l)
	if r := firstReplica(l, func(r replication.ReplicaInfo) bool {
		return r.State == replication.Faulted && h.live(r.NodeID) && c.mayResume(v.ID, r.NodeID)
	}); r != nil {
		return c.resume(ctx, v, r.NodeID)
	}
	target := desiredReplicas(v)
	if healthy(l, h) < target {
		return c.addReplica(ctx, v, h, "replace")
	}
	if c.unevenZones(v, h) {
		return c.addReplica(ctx, v, h, "rebalance")
	}
	return c.trim(ctx, v, h, target)
}

// failover promotes an InSync replica on a live node to primary, with the
// dead primary's replica Faulted (I4). When none is live the volume waits:
// any InSync replica that comes back holds every acknowledged write (I1),
// and none of another state is ever promoted.
func (c *Controller) failover(ctx context.Context, v store.Volume, h health) error {
	old := v.Layout.Primary
	cands := c.rankPromotion(ctx, v, h)
	if len(cands) == 0 {
		c.logOnce(v.ID, "no-primary", "Primary lost and no InSync replica is live; the volume waits for one",
			"volume", v.ID, "primary", old, "replicas", statesOf(v.Layout))
		return nil
	}
	c.resolved(v.ID, "no-primary")
	next, err := store.BumpEpoch(ctx, c.store, v.ID, func(cur *store.Volume) error {
		if cur.Layout.Primary != old {
			return errNoChange
		}
		r := replicaOf(&cur.Layout, cands[0])
		if r == nil || r.State != replication.InSync {
			return errNoChange
		}
		cur.Layout.Primary = cands[0]
		replicaOf(&cur.Layout, old).State = replication.Faulted
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return c.volumeErr("fail over", v.ID, err)
	}
	klog.InfoS("Volume failed over", "volume", v.ID, "from", old, "to", next.Layout.Primary,
		"zone", replicaOf(&next.Layout, next.Layout.Primary).Zone, "epoch", next.Layout.Epoch)
	c.emit(next, ReasonFailover, fmt.Sprintf("primary %s lost; %s in %s serves at epoch %d",
		old, next.Layout.Primary, replicaOf(&next.Layout, next.Layout.Primary).Zone, next.Layout.Epoch), true)
	return c.confirm(ctx, next.Layout)
}

// rankPromotion lists the InSync replicas that may become primary, best
// first: in a zone with no dead node, then on a replica that has seen the
// highest epoch and is not rebuilding (asked of its node), then with the
// most free space, then by id. Timestamps play no part.
func (c *Controller) rankPromotion(ctx context.Context, v store.Volume, h health) []string {
	type cand struct {
		id      string
		healthy bool
		epoch   uint64
		free    int64
	}
	var cs []cand
	for _, r := range v.Layout.Replicas {
		if r.NodeID == v.Layout.Primary || r.State != replication.InSync || !h.live(r.NodeID) {
			continue
		}
		rep, err := c.replicaState(ctx, r.NodeID, v.ID)
		if err != nil || rep.GetRebuilding() {
			klog.InfoS("Replica cannot be promoted", "volume", v.ID, "node", r.NodeID,
				"rebuilding", rep.GetRebuilding(), "err", err)
			continue
		}
		cs = append(cs, cand{r.NodeID, h.zoneHealthy(r.Zone), rep.GetEpoch(), h.nodes[r.NodeID].FreeBytes})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		return cmp.Or(-cmpBool(a.healthy, b.healthy), -cmp.Compare(a.epoch, b.epoch),
			-cmp.Compare(a.free, b.free), cmp.Compare(a.id, b.id))
	})
	out := make([]string, len(cs))
	for i, x := range cs {
		out[i] = x.id
	}
	return out
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// replicaState asks a node about its replica of the volume.
func (c *Controller) replicaState(ctx context.Context, nodeID, volumeID string) (*apiv1.Volume, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.PushTimeout)
	defer cancel()
	var out *apiv1.Volume
	err := c.callNode(ctx, nodeID, "get replica of "+volumeID, func(ctx context.Context, cl apiv1.NodeClient) error {
		resp, err := cl.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: volumeID})
		out = resp.GetVolume()
		return err
	})
	return out, err
}

// confirm gives the primary the layout and remembers that it has it; the
// other replica nodes get it too, best effort.
func (c *Controller) confirm(ctx context.Context, l replication.Layout) error {
	if err := c.setLayout(ctx, l.Primary, l); err != nil {
		return err
	}
	c.mu.Lock()
	c.confirmedEpochs[l.VolumeID] = confirmation{epoch: l.Epoch, primary: l.Primary}
	c.mu.Unlock()
	c.pushLayout(l)
	return nil
}

func (c *Controller) confirmed(volumeID string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.confirmedEpochs[volumeID].epoch
}

// confirmation is the layout epoch a volume's primary acknowledged, and
// which node that was.
type confirmation struct {
	epoch   uint64
	primary string
}

// unconfirm forgets what a node acknowledged as primary: a node that
// registers may have restarted and lost every layout, so the repair loop
// sends them again (and again, until the node's API answers).
func (c *Controller) unconfirm(nodeID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, cf := range c.confirmedEpochs {
		if cf.primary == nodeID {
			delete(c.confirmedEpochs, id)
		}
	}
}

// faultDead takes every replica whose node is dead out of the write path
// (I2). The primary would report them on its next write; a volume nobody
// writes should show its true state too, and be repaired.
func (c *Controller) faultDead(ctx context.Context, v store.Volume, h health) error {
	var gone []string
	next, err := store.BumpEpoch(ctx, c.store, v.ID, func(cur *store.Volume) error {
		gone = gone[:0]
		if h.dead(cur.Layout.Primary) {
			return errNoChange // failover first
		}
		for i := range cur.Layout.Replicas {
			r := &cur.Layout.Replicas[i]
			if r.NodeID != cur.Layout.Primary && r.State != replication.Faulted && h.dead(r.NodeID) {
				r.State = replication.Faulted
				gone = append(gone, r.NodeID)
			}
		}
		if len(gone) == 0 {
			return errNoChange
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return c.volumeErr("fault replicas of", v.ID, err)
	}
	klog.InfoS("Replicas on dead nodes faulted", "volume", v.ID, "nodes", gone, "epoch", next.Layout.Epoch)
	c.emit(next, ReasonDegraded, fmt.Sprintf("replicas on %v lost; %d of %d in sync", gone,
		InSyncCount(next.Layout), len(next.Layout.Replicas)), true)
	return c.confirm(ctx, next.Layout)
}

// noteFaults remembers when each Faulted replica was first seen so, for
// ResumeWindow.
func (c *Controller) noteFaults(l replication.Layout) {
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range l.Replicas {
		k := replicaKey{l.VolumeID, r.NodeID}
		if r.State != replication.Faulted {
			delete(c.faultedAt, k)
			continue
		}
		if _, ok := c.faultedAt[k]; !ok {
			c.faultedAt[k] = now
		}
	}
}

type replicaKey struct{ volume, node string }

// mayResume says whether a Faulted replica may be brought back now: it
// left less than ResumeWindow ago, and no attempt was made in the last
// resumeBackoff.
func (c *Controller) mayResume(volumeID, nodeID string) bool {
	k := replicaKey{volumeID, nodeID}
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if at, ok := c.faultedAt[k]; ok && now.Sub(at) > c.opts.ResumeWindow {
		return false
	}
	return now.Sub(c.resumedAt[k]) >= resumeBackoff
}

// resume makes a Faulted replica on a live node Syncing. The primary
// copies it only what it missed when it tracked it, else every chunk that
// differs (I5: it counts only once complete).
func (c *Controller) resume(ctx context.Context, v store.Volume, nodeID string) error {
	c.mu.Lock()
	c.resumedAt[replicaKey{v.ID, nodeID}] = c.opts.Now()
	c.mu.Unlock()
	// The volume may have grown while the replica was away: it must hold
	// the whole volume before the primary copies to it.
	if err := c.expandReplica(ctx, nodeID, v.ID, v.Size); err != nil && status.Code(err) != codes.NotFound {
		return err // a missing replica is the primary's to find, as before
	}
	next, err := store.BumpEpoch(ctx, c.store, v.ID, func(cur *store.Volume) error {
		r := replicaOf(&cur.Layout, nodeID)
		if r == nil || r.State != replication.Faulted || cur.Size != v.Size {
			return errNoChange
		}
		r.State = replication.Syncing
		r.Address = c.dataAddress(nodeID)
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return c.volumeErr("resume replica of", v.ID, err)
	}
	klog.InfoS("Replica resumed", "volume", v.ID, "node", nodeID, "epoch", next.Layout.Epoch)
	return c.confirm(ctx, next.Layout)
}

// healthy counts the replicas in the write path on live nodes.
func healthy(l replication.Layout, h health) int {
	n := 0
	for _, r := range l.Replicas {
		if r.State != replication.Faulted && h.live(r.NodeID) {
			n++
		}
	}
	return n
}

// desiredReplicas is the replica count the volume was created with.
func desiredReplicas(v store.Volume) int {
	if n, err := strconv.Atoi(v.Parameters["replicas"]); err == nil && n > 0 {
		return n
	}
	return DefaultReplicas
}

func topologyKey(v store.Volume) string {
	return cmp.Or(v.Parameters["topologyKey"], api.ZoneTopologyKey)
}

// zoneUse counts the replicas in the write path by failure domain.
func zoneUse(v store.Volume, h health) map[string]int {
	use := map[string]int{}
	for _, r := range v.Layout.Replicas {
		if r.State != replication.Faulted && h.live(r.NodeID) {
			use[r.Zone]++
		}
	}
	return use
}

// placeOne picks a node for one more replica of v (I6): not one of its
// nodes, in a domain that holds none of its replicas while such a domain
// has a node with room, else in any; most free space first.
func (c *Controller) placeOne(v store.Volume, h health, unusedOnly bool) (Candidate, bool) {
	key := topologyKey(v)
	use := zoneUse(v, h)
	var fit []Candidate
	for _, n := range c.candidates() {
		if replicaOf(&v.Layout, n.NodeID) == nil && n.Free >= v.Size && !c.avoided(n.NodeID) {
			fit = append(fit, n)
		}
	}
	sortByFree(fit)
	for _, n := range fit {
		if use[n.Topology[key]] == 0 {
			return n, true
		}
	}
	if len(fit) == 0 || unusedOnly {
		return Candidate{}, false
	}
	return fit[0], true
}

// unevenZones says a domain with room holds none of v's replicas while
// another holds two or more, and no copy is under way already.
func (c *Controller) unevenZones(v store.Volume, h health) bool {
	for _, r := range v.Layout.Replicas {
		if r.State == replication.Syncing {
			return false
		}
	}
	if !slices.ContainsFunc(slices.Collect(maps.Values(zoneUse(v, h))), func(n int) bool { return n > 1 }) {
		return false
	}
	_, ok := c.placeOne(v, h, true)
	return ok
}

// addReplica places a new Syncing replica: the record first, so that a
// crash leaves nothing unlisted, then the replica on its node, then the
// layout to the primary, which starts the copy.
func (c *Controller) addReplica(ctx context.Context, v store.Volume, h health, why string) error {
	n, ok := c.placeOne(v, h, why == "rebalance")
	if !ok {
		c.logOnce(v.ID, "no-room", "No node can take a new replica; the volume stays degraded",
			"volume", v.ID, "replicas", statesOf(v.Layout))
		return nil
	}
	c.resolved(v.ID, "no-room")
	zone := n.Topology[topologyKey(v)]
	next, err := store.BumpEpoch(ctx, c.store, v.ID, func(cur *store.Volume) error {
		if replicaOf(&cur.Layout, n.NodeID) != nil || cur.Layout.Primary != v.Layout.Primary {
			return errNoChange
		}
		cur.Layout.Replicas = append(cur.Layout.Replicas, replication.ReplicaInfo{
			NodeID: n.NodeID, Zone: zone, Address: c.dataAddress(n.NodeID), State: replication.Syncing,
		})
		return nil
	})
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return c.volumeErr("add a replica to", v.ID, err)
	}
	c.reserve(n.NodeID, next.Size)
	if err := c.createReplica(ctx, n.NodeID, v.ID, next.Size); err != nil {
		klog.InfoS("Creating a new replica failed; removing it again", "volume", v.ID, "node", n.NodeID, "err", err)
		c.avoid(n.NodeID)
		_, rerr := c.removeReplica(ctx, v.ID, n.NodeID, false)
		return errors.Join(err, rerr)
	}
	klog.InfoS("Replica added", "volume", v.ID, "node", n.NodeID, "zone", zone, "why", why, "epoch", next.Layout.Epoch)
	if why == "replace" {
		c.emit(next, ReasonReplicaReplaced, fmt.Sprintf("new replica on %s in %s is syncing", n.NodeID, zone), false)
	}
	return c.confirm(ctx, next.Layout)
}

// trim removes what the volume no longer needs once it has its replicas
// InSync: Faulted replicas, and the surplus of a domain holding two. A
// Faulted replica past ResumeWindow goes even before, so that a node gone
// for long does not hold a place in the layout.
func (c *Controller) trim(ctx context.Context, v store.Volume, h health, target int) error {
	l := v.Layout
	inSync := 0
	for _, r := range l.Replicas {
		if r.State == replication.InSync && h.live(r.NodeID) {
			inSync++
		}
	}
	for _, r := range l.Replicas {
		if r.State == replication.Faulted && (inSync >= target || c.pastWindow(v.ID, r.NodeID)) {
			return c.dropReplica(ctx, v, r.NodeID, h)
		}
	}
	if inSync < target || len(l.Replicas) <= target {
		return nil
	}
	use := zoneUse(v, h)
	for _, st := range []replication.ReplicaState{replication.Syncing, replication.InSync} {
		for _, r := range slices.Backward(l.Replicas) {
			if r.NodeID == l.Primary || r.State != st || use[r.Zone] < 2 {
				continue
			}
			if st == replication.InSync && inSync-1 < target {
				continue
			}
			return c.dropReplica(ctx, v, r.NodeID, h)
		}
	}
	return nil
}

func (c *Controller) pastWindow(volumeID, nodeID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.faultedAt[replicaKey{volumeID, nodeID}]
	return ok && c.opts.Now().Sub(at) > c.opts.ResumeWindow
}

// dropReplica removes a replica from the layout and deletes its data if
// its node answers; a dead node's copy is collected when it registers.
func (c *Controller) dropReplica(ctx context.Context, v store.Volume, nodeID string, h health) error {
	next, err := c.removeReplica(ctx, v.ID, nodeID, true)
	if errors.Is(err, errNoChange) {
		return nil
	}
	if err != nil {
		return err
	}
	klog.InfoS("Replica removed", "volume", v.ID, "node", nodeID, "epoch", next.Layout.Epoch,
		"replicas", statesOf(next.Layout))
	if err := c.confirm(ctx, next.Layout); err != nil {
		return err
	}
	if h.live(nodeID) {
		if err := c.deleteReplica(ctx, nodeID, v.ID); err != nil {
			klog.InfoS("Deleting a removed replica failed; it goes when the node registers again",
				"volume", v.ID, "node", nodeID, "err", err)
			return nil
		}
		c.release(nodeID, v.Size)
	}
	return nil
}

// removeReplica takes the node out of the layout under a new epoch. It
// never removes the primary, nor, with keepInSync, the last InSync copies
// the volume needs.
func (c *Controller) removeReplica(ctx context.Context, volumeID, nodeID string, keepInSync bool) (store.Volume, error) {
	return store.BumpEpoch(ctx, c.store, volumeID, func(cur *store.Volume) error {
		i := slices.IndexFunc(cur.Layout.Replicas, func(r replication.ReplicaInfo) bool { return r.NodeID == nodeID })
		if i < 0 || nodeID == cur.Layout.Primary {
			return errNoChange
		}
		if keepInSync && cur.Layout.Replicas[i].State == replication.InSync &&
			InSyncCount(cur.Layout)-1 < max(desiredReplicas(*cur), cur.MinInSyncReplicas) {
			return errNoChange
		}
		cur.Layout.Replicas = slices.Delete(cur.Layout.Replicas, i, i+1)
		return nil
	})
}

func firstReplica(l replication.Layout, pred func(replication.ReplicaInfo) bool) *replication.ReplicaInfo {
	for i := range l.Replicas {
		if pred(l.Replicas[i]) {
			return &l.Replicas[i]
		}
	}
	return nil
}

// avoidPlacement is how long a node that failed to create a replica gets
// no new one: it heartbeats but does not answer (it is restarting, or cut
// off from the controller's calls), and placing there again at once would
// only add and remove the replica every pass.
const avoidPlacement = 5 * time.Second

func (c *Controller) avoid(nodeID string) {
	c.mu.Lock()
	c.avoidUntil[nodeID] = c.opts.Now().Add(avoidPlacement)
	c.mu.Unlock()
}

func (c *Controller) avoided(nodeID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opts.Now().Before(c.avoidUntil[nodeID])
}

// lockVolume serializes repairs of one volume.
func (c *Controller) lockVolume(id string) func() {
	c.mu.Lock()
	m, ok := c.volumeLocks[id]
	if !ok {
		m = &sync.Mutex{}
		c.volumeLocks[id] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// logOnce logs a condition the first time a volume is in it, so that a
// pass every RepairInterval does not repeat it.
func (c *Controller) logOnce(volumeID, what, msg string, kv ...any) {
	c.mu.Lock()
	k := replicaKey{volumeID, what}
	seen := c.logged[k]
	c.logged[k] = true
	c.mu.Unlock()
	if !seen {
		klog.InfoS(msg, kv...)
	}
}

// resolved says a condition logOnce reported is over, so that it is
// logged again if it comes back.
func (c *Controller) resolved(volumeID, what string) {
	c.mu.Lock()
	delete(c.logged, replicaKey{volumeID, what})
	c.mu.Unlock()
}

func (c *Controller) emit(v store.Volume, reason, msg string, warning bool) {
	c.opts.Events.VolumeEvent(v, reason, msg, warning)
}
