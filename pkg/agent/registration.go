package agent

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// defaultHeartbeatInterval is how often a node tells the controller it is
// alive when Config.HeartbeatInterval is zero.
const defaultHeartbeatInterval = 500 * time.Millisecond

// registrar keeps the node registered with the controller: it registers,
// then heartbeats every interval, and registers again whenever the
// controller has forgotten the node (NOT_FOUND) or could not be reached.
// Registering makes the controller send the node every layout it holds a
// replica of again, so a node cut off for a while, whose primaries may
// have stopped serving meanwhile, serves again what is still its own.
type registrar struct {
	a        *Agent
	client   apiv1.RegistryClient
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
}

func newRegistrar(a *Agent, client apiv1.RegistryClient) *registrar {
	interval := a.cfg.HeartbeatInterval
	if interval == 0 {
		interval = defaultHeartbeatInterval
	}
	return &registrar{a: a, client: client, interval: interval,
		stop: make(chan struct{}), done: make(chan struct{})}
}

// run loops until close is called.
func (r *registrar) run() {
	defer close(r.done)
	registered := false
	for {
		registered = r.step(registered)
		select {
		case <-r.stop:
			return
		case <-time.After(r.interval):
		}
	}
}

// step registers or heartbeats once and says whether the controller knows
// the node afterwards.
func (r *registrar) step(registered bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), r.interval+time.Second)
	defer cancel()
	if !registered {
		return r.register(ctx)
	}
	_, err := r.client.Heartbeat(ctx, &apiv1.HeartbeatRequest{NodeId: r.a.cfg.NodeID, FreeBytes: r.a.freeBytes()})
	if err == nil {
		return true
	}
	klog.V(2).InfoS("Heartbeat failed", "node", r.a.cfg.NodeID, "code", status.Code(err), "err", err)
	if status.Code(err) == codes.NotFound {
		return r.register(ctx)
	}
	return false
}

func (r *registrar) register(ctx context.Context) bool {
	req := r.a.registerRequest()
	if _, err := r.client.RegisterNode(ctx, req); err != nil {
		klog.V(1).InfoS("Registering with the controller failed; will retry", "node", req.NodeId, "err", err)
		return false
	}
	klog.InfoS("Registered with the controller", "node", req.NodeId, "zone", req.Zone,
		"capacity", req.CapacityBytes, "free", req.FreeBytes)
	return true
}

// close stops the loop and waits for it.
func (r *registrar) close() {
	close(r.stop)
	<-r.done
}

func (a *Agent) registerRequest() *apiv1.RegisterNodeRequest {
	ep := a.Endpoints()
	return &apiv1.RegisterNodeRequest{
		NodeId:        a.cfg.NodeID,
		Topology:      a.topology(),
		Zone:          a.cfg.Zone,
		DataAddress:   ep.Replication,
		ApiAddress:    ep.API,
		NbdAddress:    ep.NBD,
		CapacityBytes: a.capacity,
		FreeBytes:     a.freeBytes(),
	}
}

// topology is Config.Topology with the zone key filled in from Zone when
// the configuration leaves it out.
func (a *Agent) topology() map[string]string {
	out := map[string]string{}
	for k, v := range a.cfg.Topology {
		out[k] = v
	}
	if _, ok := out[api.ZoneTopologyKey]; !ok && a.cfg.Zone != "" {
		out[api.ZoneTopologyKey] = a.cfg.Zone
	}
	return out
}

// freeBytes is the capacity no local replica reserves. Replicas are
// accounted at their full size, though their files are sparse, so that a
// node never promises space that writes could later run out of.
func (a *Agent) freeBytes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	free := a.capacity
	for _, r := range a.replicas {
		free -= r.Size()
	}
	return max(free, 0)
}

// dataDirCapacity is the size of the filesystem holding dir, the default
// capacity of a node.
func dataDirCapacity(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Blocks) * st.Bsize, nil
}
