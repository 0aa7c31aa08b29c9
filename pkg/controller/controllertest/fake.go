// Package controllertest holds fakes for testing package controller and
// its RPC edges without node agents: FakeNodes stands in for the Node
// service of every node, and New builds a Controller over a bolt store in
// a test's temporary directory with nodes registered and a clock the test
// moves.
package controllertest

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
	"github.com/trireme-csi/trireme/pkg/store/bolt"
)

// GiB is a gibibyte.
const GiB = 1 << 30

// FakeNodes answers Node service calls for every node address. Replicas
// and layouts are recorded per node API address.
type FakeNodes struct {
	mu       sync.Mutex
	replicas map[string]map[string]int64              // addr -> volume -> size
	layouts  map[string]map[string]replication.Layout // addr -> volume -> layout
	down     map[string]bool
}

// NewFakeNodes returns nodes that hold nothing.
func NewFakeNodes() *FakeNodes {
	return &FakeNodes{
		replicas: map[string]map[string]int64{},
		layouts:  map[string]map[string]replication.Layout{},
		down:     map[string]bool{},
	}
}

// Dial is a controller.NodeDialer.
func (f *FakeNodes) Dial(_, addr string) (apiv1.NodeClient, error) {
	return &fakeNode{f: f, addr: addr}, nil
}

// SetDown makes every call to the node at addr fail with UNAVAILABLE.
func (f *FakeNodes) SetDown(addr string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[addr] = down
}

// Replicas returns the volumes whose replica the node at addr holds.
func (f *FakeNodes) Replicas(addr string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for v := range f.replicas[addr] {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// Drop removes the node's replica of volume, as if it had never been made.
func (f *FakeNodes) Drop(addr, volume string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.replicas[addr], volume)
	delete(f.layouts[addr], volume)
}

// Restart makes the node at addr forget every layout it got, as a
// restarted agent does; its replicas stay.
func (f *FakeNodes) Restart(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.layouts, addr)
}

// Layout returns the layout of the volume the node at addr last got.
func (f *FakeNodes) Layout(addr, volume string) (replication.Layout, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l, ok := f.layouts[addr][volume]
	return l, ok
}

type fakeNode struct {
	apiv1.NodeClient // nil: calls the fake does not implement panic
	f                *FakeNodes
	addr             string
}

func (n *fakeNode) lock() (func(), error) {
	n.f.mu.Lock()
	if n.f.down[n.addr] {
		n.f.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "node %s is down", n.addr)
	}
	return n.f.mu.Unlock, nil
}

func (n *fakeNode) CreateReplica(_ context.Context, req *apiv1.CreateReplicaRequest, _ ...grpc.CallOption) (*apiv1.CreateReplicaResponse, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	m := n.f.replicas[n.addr]
	if m == nil {
		m = map[string]int64{}
		n.f.replicas[n.addr] = m
	}
	if size, ok := m[req.GetVolumeId()]; ok && size != req.GetSizeBytes() {
		return nil, status.Error(codes.AlreadyExists, "replica exists with another size")
	}
	m[req.GetVolumeId()] = req.GetSizeBytes()
	return &apiv1.CreateReplicaResponse{}, nil
}

// ExpandReplica grows the node's replica, as the agent does: never
// shrinks it.
func (n *fakeNode) ExpandReplica(_ context.Context, req *apiv1.ExpandReplicaRequest, _ ...grpc.CallOption) (*apiv1.ExpandReplicaResponse, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	size, ok := n.f.replicas[n.addr][req.GetVolumeId()]
	switch {
	case !ok:
		return nil, status.Errorf(codes.NotFound, "no replica of %s", req.GetVolumeId())
	case size > req.GetSizeBytes():
		return nil, status.Errorf(codes.OutOfRange, "replica holds %d bytes", size)
	}
	n.f.replicas[n.addr][req.GetVolumeId()] = req.GetSizeBytes()
	return &apiv1.ExpandReplicaResponse{Volume: n.describe(req.GetVolumeId())}, nil
}

// ReplicaSize returns the size of the node's replica of volume, or 0.
func (f *FakeNodes) ReplicaSize(addr, volume string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replicas[addr][volume]
}

func (n *fakeNode) DeleteReplica(_ context.Context, req *apiv1.DeleteReplicaRequest, _ ...grpc.CallOption) (*apiv1.DeleteReplicaResponse, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	delete(n.f.replicas[n.addr], req.GetVolumeId())
	delete(n.f.layouts[n.addr], req.GetVolumeId())
	return &apiv1.DeleteReplicaResponse{}, nil
}

func (n *fakeNode) SetLayout(_ context.Context, req *apiv1.SetLayoutRequest, _ ...grpc.CallOption) (*apiv1.SetLayoutResponse, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	l := api.LayoutFromProto(req.GetLayout())
	if _, ok := n.f.replicas[n.addr][l.VolumeID]; !ok {
		return nil, status.Errorf(codes.NotFound, "no replica of %s", l.VolumeID)
	}
	if n.f.layouts[n.addr] == nil {
		n.f.layouts[n.addr] = map[string]replication.Layout{}
	}
	if cur, ok := n.f.layouts[n.addr][l.VolumeID]; ok && cur.Epoch > l.Epoch {
		return nil, status.Error(codes.FailedPrecondition, "stale layout")
	}
	n.f.layouts[n.addr][l.VolumeID] = l
	return &apiv1.SetLayoutResponse{}, nil
}

// ListVolumes lists the node's replicas, with the layouts it got.
func (n *fakeNode) ListVolumes(_ context.Context, _ *apiv1.ListVolumesRequest, _ ...grpc.CallOption) (*apiv1.ListVolumesResponse, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := &apiv1.ListVolumesResponse{}
	for _, id := range slices.Sorted(maps.Keys(n.f.replicas[n.addr])) {
		out.Volumes = append(out.Volumes, n.describe(id))
	}
	return out, nil
}

// GetVolume describes the node's replica of a volume: its epoch is that
// of the last layout the node got.
func (n *fakeNode) GetVolume(_ context.Context, req *apiv1.GetVolumeRequest, _ ...grpc.CallOption) (*apiv1.GetVolumeResponse, error) {
	unlock, err := n.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, ok := n.f.replicas[n.addr][req.GetVolumeId()]; !ok {
		return nil, status.Errorf(codes.NotFound, "no replica of %s", req.GetVolumeId())
	}
	return &apiv1.GetVolumeResponse{Volume: n.describe(req.GetVolumeId())}, nil
}

func (n *fakeNode) describe(id string) *apiv1.Volume {
	v := &apiv1.Volume{VolumeId: id, SizeBytes: n.f.replicas[n.addr][id]}
	if l, ok := n.f.layouts[n.addr][id]; ok {
		v.Epoch = l.Epoch
		v.Layout = api.LayoutToProto(l)
	}
	return v
}

// Clock is a time the test moves.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Env is a Controller with fake nodes, a fake clock and a bolt store.
type Env struct {
	C     *controller.Controller
	Store store.Store
	Nodes *FakeNodes
	Clock *Clock
}

// Node describes a fake node by id and zone.
type Node struct{ ID, Zone string }

// SixNodes is two nodes in each of three zones.
var SixNodes = []Node{
	{"a1", "zone-a"}, {"a2", "zone-a"},
	{"b1", "zone-b"}, {"b2", "zone-b"},
	{"c1", "zone-c"}, {"c2", "zone-c"},
}

// New returns a Controller whose store lives in t.TempDir(), with nodes
// of 10 GiB registered at once. It is closed at the end of the test.
func New(t *testing.T, nodes []Node) *Env {
	t.Helper()
	return NewSized(t, nodes, 10*GiB)
}

// NewSized is New with nodes of capacity bytes.
func NewSized(t *testing.T, nodes []Node, capacity int64) *Env {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "controller.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Store: st, Nodes: NewFakeNodes(), Clock: &Clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	e.C = controller.New(controller.Options{Store: st, DialNode: e.Nodes.Dial, Now: e.Clock.Now})
	t.Cleanup(func() {
		e.C.Close()
		st.Close()
	})
	for _, n := range nodes {
		if err := e.C.RegisterNode(context.Background(), Registration(n.ID, n.Zone, capacity)); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// Registration is what the fake node id in zone registers with; its API
// address is APIAddress(id).
func Registration(id, zone string, capacity int64) controller.Registration {
	return controller.Registration{
		NodeID: id, Zone: zone, Topology: map[string]string{api.ZoneTopologyKey: zone},
		DataAddress: id + ".data:7600", APIAddress: APIAddress(id), NBDAddress: id + ".nbd:10809",
		CapacityBytes: capacity, FreeBytes: capacity,
	}
}

// APIAddress is the API address of fake node id.
func APIAddress(id string) string { return fmt.Sprintf("%s.api:7601", id) }
