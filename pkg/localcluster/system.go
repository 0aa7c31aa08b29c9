package localcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/trireme-csi/trireme/pkg/api"
)

// DefaultNodeCapacity is what each node of a System offers for replicas.
// Replica files are sparse, so it need not be free on disk.
const DefaultNodeCapacity = 4 << 30

// stopGrace is how long a process may take to stop after SIGTERM.
const stopGrace = 15 * time.Second

// SystemOptions configure a whole Trireme on this machine.
type SystemOptions struct {
	// Binary is the trireme executable.
	Binary string
	// Dir holds every process's data, sockets and log.
	Dir string
	// ControllerIP is where the controller's internal API listens;
	// empty means 127.0.0.1.
	ControllerIP string
	// Nodes are the node agents to start.
	Nodes []NodeSpec
	// NodeCapacity is what each node offers for replicas; zero means
	// DefaultNodeCapacity.
	NodeCapacity int64
}

// System is a controller and node agents registered with it, each node
// serving the CSI Node service on its own unix socket: Trireme as a
// Kubernetes cluster would run it, without Kubernetes.
type System struct {
	*Cluster
	Controller *Controller
	// Dir holds the processes' data, sockets and logs.
	Dir string
	// NodeCapacity is what each node offers for replicas.
	NodeCapacity int64
	// shared says Dir is bind-mounted on itself as a shared mount (see
	// shareMounts), to be undone last.
	shared bool
}

// StartSystem starts the controller, then the node agents, and waits until
// every node has registered. On error it stops what it started.
func StartSystem(ctx context.Context, o SystemOptions) (*System, error) {
	if o.ControllerIP == "" {
		o.ControllerIP = "127.0.0.1"
	}
	if o.NodeCapacity == 0 {
		o.NodeCapacity = DefaultNodeCapacity
	}
	s := &System{Dir: o.Dir, NodeCapacity: o.NodeCapacity}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := shareMounts(resolve(o.Dir)); err != nil {
		return nil, err
	}
	s.shared = true
	var err error
	if s.Controller, err = StartController(ctx, o.Binary, o.Dir, o.ControllerIP); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	opts := Options{Binary: o.Binary, Dir: o.Dir, Controller: s.Controller.APIAddress,
		CSI: true, CapacityBytes: o.NodeCapacity}
	if s.Cluster, err = Start(ctx, opts, o.Nodes); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	if err := s.WaitRegistered(ctx); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

// Zones returns the zones of the nodes, sorted.
func (s *System) Zones() []string {
	var zones []string
	for _, n := range s.Nodes {
		if !slices.Contains(zones, n.Zone) {
			zones = append(zones, n.Zone)
		}
	}
	slices.Sort(zones)
	return zones
}

// NodesIn returns the nodes of a zone, in start order.
func (s *System) NodesIn(zone string) []*Node {
	var out []*Node
	for _, n := range s.Nodes {
		if n.Zone == zone {
			out = append(out, n)
		}
	}
	return out
}

// WaitRegistered waits until the controller counts every node as live: the
// CSI GetCapacity of each zone is then the capacity of all its nodes.
func (s *System) WaitRegistered(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		missing, err := s.unregisteredZones(ctx)
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes of %v not registered with the controller: %w", missing, errors.Join(ctx.Err(), err))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// unregisteredZones lists the zones whose capacity the controller does not
// fully count yet.
func (s *System) unregisteredZones(ctx context.Context) ([]string, error) {
	var missing []string
	for _, zone := range s.Zones() {
		free, err := s.ZoneCapacity(ctx, zone)
		if err != nil {
			return nil, err
		}
		if free < int64(len(s.NodesIn(zone)))*s.NodeCapacity {
			missing = append(missing, zone)
		}
	}
	return missing, nil
}

// ZoneCapacity asks the controller, through CSI GetCapacity, for the free
// bytes of the live nodes in zone.
func (s *System) ZoneCapacity(ctx context.Context, zone string) (int64, error) {
	req := &csipb.GetCapacityRequest{AccessibleTopology: &csipb.Topology{
		Segments: map[string]string{api.ZoneTopologyKey: zone}}}
	resp, err := csipb.NewControllerClient(s.Controller.Conn).GetCapacity(ctx, req)
	if err != nil {
		return 0, fmt.Errorf("get capacity of %s: %w", zone, err)
	}
	return resp.GetAvailableCapacity(), nil
}

// Stop stops the node agents with SIGTERM, then the controller, and then
// removes any mount or loop device left under Dir (by nodes that died
// with volumes staged). Its error lists what had to be forced and what
// could not be removed.
func (s *System) Stop() error {
	var errs []error
	if s.Cluster != nil {
		for _, n := range s.Nodes {
			n.closeClients()
			errs = append(errs, n.Terminate(stopGrace))
		}
	}
	if s.Controller != nil {
		errs = append(errs, s.Controller.Stop(stopGrace))
	}
	errs = append(errs, s.sweep())
	if s.shared {
		errs = append(errs, unshareMounts(resolve(s.Dir)))
		s.shared = false
	}
	return errors.Join(errs...)
}
