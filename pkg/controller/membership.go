package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/store"
)

// Registration is what a node agent tells the controller about itself.
type Registration struct {
	NodeID   string
	Zone     string
	Topology map[string]string
	// DataAddress, APIAddress and NBDAddress are host:port of the node's
	// replication server, Node service and NBD server.
	DataAddress string
	APIAddress  string
	NBDAddress  string
	// CapacityBytes is the space the node offers; FreeBytes the part of
	// it no replica holds.
	CapacityBytes int64
	FreeBytes     int64
}

// NodeStatus is a node as the controller sees it now.
type NodeStatus struct {
	Registration
	// LastHeartbeat is when the node last registered or heartbeat.
	LastHeartbeat time.Time
	// Live says the heartbeat is recent enough to place replicas there.
	Live bool
}

// members is the in-memory view of the nodes that registered with this
// controller process.
type members struct {
	mu    sync.Mutex
	nodes map[string]*NodeStatus
}

func newMembers() *members {
	return &members{nodes: map[string]*NodeStatus{}}
}

// RegisterNode records a node. The node record is written to the store
// only when it differs from the stored one, so restarts of a node agent
// cost no write unless something changed.
func (c *Controller) RegisterNode(ctx context.Context, r Registration) error {
	if err := validateRegistration(r); err != nil {
		return err
	}
	if err := c.checkAddressesFree(r); err != nil {
		return err
	}
	if err := c.persistNode(ctx, r); err != nil {
		return err
	}
	now := c.opts.Now()
	c.members.mu.Lock()
	c.members.nodes[r.NodeID] = &NodeStatus{Registration: r, LastHeartbeat: now}
	c.members.mu.Unlock()
	c.unconfirm(r.NodeID)
	klog.InfoS("Node registered", "node", r.NodeID, "zone", r.Zone, "api", r.APIAddress,
		"data", r.DataAddress, "capacity", r.CapacityBytes, "free", r.FreeBytes)
	go c.resendLayouts(r.NodeID)
	return nil
}

// checkAddressesFree refuses a registration naming an address another
// live node registered: the controller would send that node's calls, or
// the replicas placed on it, to the other one. A dead node's addresses
// may be taken over (a replacement machine may get its IP).
func (c *Controller) checkAddressesFree(r Registration) error {
	for _, n := range c.liveNodes() {
		if n.NodeID == r.NodeID {
			continue
		}
		for _, a := range []struct{ field, mine, theirs string }{
			{"api_address", r.APIAddress, n.APIAddress},
			{"data_address", r.DataAddress, n.DataAddress},
			{"nbd_address", r.NBDAddress, n.NBDAddress},
		} {
			if a.mine == a.theirs {
				return fmt.Errorf("register node %s: %s %s: %w: node %s", r.NodeID, a.field, a.mine, ErrAddressInUse, n.NodeID)
			}
		}
	}
	return nil
}

func validateRegistration(r Registration) error {
	if r.NodeID == "" || len(r.NodeID) > store.MaxNodeIDLen {
		return fmt.Errorf("%w: node_id must be 1 to %d bytes", ErrInvalid, store.MaxNodeIDLen)
	}
	addrs := map[string]string{"data_address": r.DataAddress, "api_address": r.APIAddress, "nbd_address": r.NBDAddress}
	for _, field := range slices.Sorted(maps.Keys(addrs)) {
		if host, port, err := net.SplitHostPort(addrs[field]); err != nil || host == "" || port == "" {
			return fmt.Errorf("%w: %s %q is not host:port", ErrInvalid, field, addrs[field])
		}
	}
	if r.CapacityBytes < 0 || r.FreeBytes < 0 {
		return fmt.Errorf("%w: capacity_bytes and free_bytes must not be negative", ErrInvalid)
	}
	return nil
}

// persistNode writes the node record if it is missing or differs from r.
func (c *Controller) persistNode(ctx context.Context, r Registration) error {
	for {
		stored, err := c.store.GetNode(ctx, r.NodeID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("register node %s: %w", r.NodeID, err)
		}
		next := nodeRecord(r, stored.Revision, c.opts.Now())
		if err == nil && sameNode(stored, next) {
			return nil
		}
		_, err = c.store.PutNode(ctx, next)
		if !errors.Is(err, store.ErrConflict) && !errors.Is(err, store.ErrExists) {
			if err != nil {
				return fmt.Errorf("register node %s: %w", r.NodeID, err)
			}
			return nil
		}
	}
}

func nodeRecord(r Registration, revision uint64, now time.Time) store.Node {
	return store.Node{
		ID: r.NodeID, Zone: r.Zone, Topology: maps.Clone(r.Topology),
		DataAddress: r.DataAddress, APIAddress: r.APIAddress,
		CapacityBytes: r.CapacityBytes, LastHeartbeat: now.UTC(), Revision: revision,
	}
}

// sameNode compares what a registration can change.
func sameNode(a, b store.Node) bool {
	return a.Zone == b.Zone && maps.Equal(a.Topology, b.Topology) &&
		a.DataAddress == b.DataAddress && a.APIAddress == b.APIAddress &&
		a.CapacityBytes == b.CapacityBytes
}

// Heartbeat records that the node is alive with freeBytes unreserved. A
// node this process has not seen register gets ErrNodeNotFound and must
// register again.
func (c *Controller) Heartbeat(nodeID string, freeBytes int64) error {
	c.members.mu.Lock()
	defer c.members.mu.Unlock()
	n, ok := c.members.nodes[nodeID]
	if !ok {
		return fmt.Errorf("heartbeat of %s: %w", nodeID, ErrNodeNotFound)
	}
	n.LastHeartbeat = c.opts.Now()
	n.FreeBytes = max(freeBytes, 0)
	return nil
}

// Nodes returns every node registered with this process, by id.
func (c *Controller) Nodes() []NodeStatus {
	now := c.opts.Now()
	c.members.mu.Lock()
	defer c.members.mu.Unlock()
	out := make([]NodeStatus, 0, len(c.members.nodes))
	for _, id := range slices.Sorted(maps.Keys(c.members.nodes)) {
		n := *c.members.nodes[id]
		n.Live = now.Sub(n.LastHeartbeat) <= c.opts.HeartbeatTimeout
		out = append(out, n)
	}
	return out
}

// liveNodes returns the nodes whose heartbeat is recent.
func (c *Controller) liveNodes() []NodeStatus {
	var out []NodeStatus
	for _, n := range c.Nodes() {
		if n.Live {
			out = append(out, n)
		}
	}
	return out
}

// isLive says whether the node's heartbeat is recent.
func (c *Controller) isLive(nodeID string) bool {
	for _, n := range c.liveNodes() {
		if n.NodeID == nodeID {
			return true
		}
	}
	return false
}

// knownDead says the node is not live although it has had time to
// register and heartbeat: a node that registered with this process and
// then stopped heartbeating, or one that has not registered at all within
// StartupGrace of this process's start (after a controller restart or a
// change of leader, nodes need a moment to find it).
func (c *Controller) knownDead(nodeID string) bool {
	return c.health().dead(nodeID)
}

// KnownDead says whether the node has stopped heartbeating, past the
// grace a restarted controller gives nodes to register again.
func (c *Controller) KnownDead(nodeID string) bool { return c.knownDead(nodeID) }

// reserve lowers a node's free bytes at once after a replica is placed
// there; the node's next heartbeat reports the truth.
func (c *Controller) reserve(nodeID string, bytes int64) {
	c.members.mu.Lock()
	defer c.members.mu.Unlock()
	if n, ok := c.members.nodes[nodeID]; ok {
		n.FreeBytes = max(n.FreeBytes-bytes, 0)
	}
}

// release gives back at once what a deleted replica held on a node; the
// node's next heartbeat reports the truth.
func (c *Controller) release(nodeID string, bytes int64) {
	c.members.mu.Lock()
	defer c.members.mu.Unlock()
	if n, ok := c.members.nodes[nodeID]; ok {
		n.FreeBytes = min(n.FreeBytes+bytes, n.CapacityBytes)
	}
}

// nodeKnown says whether the node registered, now or in an earlier life
// of the controller.
func (c *Controller) nodeKnown(ctx context.Context, nodeID string) (bool, error) {
	if _, err := c.apiAddress(ctx, nodeID); err != nil {
		if errors.Is(err, ErrNodeNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// apiAddress finds the Node service of a node: from its registration, or
// from the stored record while it has not registered since a restart.
func (c *Controller) apiAddress(ctx context.Context, nodeID string) (string, error) {
	c.members.mu.Lock()
	n, ok := c.members.nodes[nodeID]
	c.members.mu.Unlock()
	if ok {
		return n.APIAddress, nil
	}
	rec, err := c.store.GetNode(ctx, nodeID)
	if errors.Is(err, store.ErrNotFound) {
		return "", fmt.Errorf("node %s: %w", nodeID, ErrNodeNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("node %s: %w", nodeID, err)
	}
	return rec.APIAddress, nil
}
