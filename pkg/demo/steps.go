package demo

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// volumeSize leaves the filesystem twice the tree's size, and room for
// ext4's own metadata.
func volumeSize(t tree) int64 {
	const slack = 256 << 20
	return (2*t.bytes+slack)>>20<<20 + slack
}

// startCluster starts the controller and the nodes and waits until every
// node has registered.
func (r *run) startCluster(ctx context.Context) error {
	r.say("\n[1/7] Starting the controller and %d node agents, each on its own loopback address", r.o.Nodes)
	specs, err := localcluster.Spread(r.o.Nodes, r.o.Zones)
	if err != nil {
		return err
	}
	start := time.Now()
	r.sys, err = localcluster.StartSystem(ctx, localcluster.SystemOptions{Binary: r.o.Binary, Dir: r.o.Dir, Nodes: specs})
	if err != nil {
		return err
	}
	r.td.push(fmt.Sprintf("Stop the %d processes", len(r.sys.Nodes)+1), func(context.Context) error {
		return r.sys.Stop()
	})
	c := r.sys.Controller
	r.say("   controller  CSI unix://%s, node registry %s (pid %d)", c.Socket, c.APIAddress, c.PID())
	for _, n := range r.sys.Nodes {
		r.say("   %-8s %s  %-11s CSI unix://%s (pid %d)", n.ID, n.Zone, n.IP, n.CSISocket, n.PID())
	}
	return r.reportCapacity(ctx, time.Since(start))
}

// reportCapacity shows that every node registered, by the capacity the
// controller counts in each zone.
func (r *run) reportCapacity(ctx context.Context, took time.Duration) error {
	var parts []string
	for _, z := range r.sys.Zones() {
		free, err := r.sys.ZoneCapacity(ctx, z)
		if err != nil {
			return err
		}
		parts = append(parts, fmt.Sprintf("%s %d GiB", z, free>>30))
	}
	r.say("   All %d nodes registered with the controller in %s; GetCapacity per zone: %s.",
		len(r.sys.Nodes), seconds(took), strings.Join(parts, ", "))
	return nil
}

// createVolume provisions the volume, preferring the second zone, and
// shows where its replicas landed.
func (r *run) createVolume(ctx context.Context) error {
	zones := r.sys.Zones()
	preferred := zones[1]
	size := volumeSize(r.src)
	r.say("\n[2/7] Creating a volume through the CSI Controller service, as the external-provisioner would")
	var createErr error
	r.td.push("DeleteVolume", func(ctx context.Context) error { return r.deleteVolume(ctx, createErr) })
	err := r.timedCall(ctx, "CreateVolume", func() error {
		r.vol, createErr = r.provision(ctx, size, preferred)
		return createErr
	}, func() string {
		return fmt.Sprintf("%s: %s, replicas=3, fsType=%s, preferred zone %s", r.pvName, mib(size), r.o.FSType, preferred)
	})
	if err != nil {
		return err
	}
	r.say("   volume id %s", r.vol.GetVolumeId())
	if err := r.locate(ctx); err != nil {
		return err
	}
	r.showPlacement(preferred)
	return nil
}

// deleteVolume deletes the volume. When CreateVolume failed without an
// answer (Ctrl-C, a timeout, a lost connection), the volume may exist
// all the same: CreateVolume is retried with the same name, which
// returns it, as the external-provisioner does before it gives up.
func (r *run) deleteVolume(ctx context.Context, createErr error) error {
	if r.vol == nil {
		switch status.Code(createErr) {
		case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable:
		default:
			return nil // refused: nothing was created
		}
		vol, err := r.provision(ctx, volumeSize(r.src), r.sys.Zones()[1])
		if err != nil {
			return err
		}
		r.vol = vol
	}
	return r.deprovision(ctx, r.vol.GetVolumeId())
}

// locate asks the controller's registry where the volume is served.
func (r *run) locate(ctx context.Context) error {
	reg, err := r.sys.Controller.DialRegistry()
	if err != nil {
		return err
	}
	defer reg.Close()
	resp, err := reg.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: r.vol.GetVolumeId()})
	if err != nil {
		return fmt.Errorf("locate %s: %w", r.vol.GetVolumeId(), err)
	}
	r.layout = resp.GetLayout()
	return r.checkLayout()
}

// checkLayout makes sure the layout names only nodes of the cluster.
func (r *run) checkLayout() error {
	if r.sys.Node(r.layout.GetPrimary()) == nil {
		return fmt.Errorf("volume %s: primary %q is no node of the cluster", r.vol.GetVolumeId(), r.layout.GetPrimary())
	}
	for _, rep := range r.layout.GetReplicas() {
		if r.sys.Node(rep.GetNodeId()) == nil {
			return fmt.Errorf("volume %s: replica on %q, no node of the cluster", r.vol.GetVolumeId(), rep.GetNodeId())
		}
	}
	return nil
}

// showPlacement prints every node by zone with its part in the volume.
func (r *run) showPlacement(preferred string) {
	r.say("   Placement, epoch %d (the primary takes every write and acknowledges it once every", r.layout.GetEpoch())
	r.say("   in-sync replica has it):")
	r.showNodes()
	primary := r.sys.Node(r.layout.GetPrimary())
	where := "the preferred zone"
	if primary.Zone != preferred {
		where = "NOT the preferred zone " + preferred
	}
	r.say("   Primary %s is in %s, %s; the other replicas are in %s.",
		primary.ID, primary.Zone, where, strings.Join(r.otherReplicaZones(), " and "))
}

// showLayout prints the placement after the failover.
func (r *run) showLayout() {
	r.say("   Placement now, epoch %d:", r.layout.GetEpoch())
	r.showNodes()
}

// showNodes prints every node by zone with its part in the volume.
func (r *run) showNodes() {
	for _, z := range r.sys.Zones() {
		for i, n := range r.sys.NodesIn(z) {
			zone := z
			if i > 0 {
				zone = ""
			}
			role := r.role(n.ID)
			if !n.Alive() {
				role = "killed"
			}
			r.say("     %-7s %-8s %-11s %s", zone, n.ID, n.IP, role)
		}
	}
}

// role describes a node's part in the volume.
func (r *run) role(nodeID string) string {
	for _, rep := range r.layout.GetReplicas() {
		if rep.GetNodeId() != nodeID {
			continue
		}
		state := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(rep.GetState().String(), "REPLICA_STATE_")), "_", " ")
		if nodeID == r.layout.GetPrimary() {
			return "primary, " + state
		}
		return "replica, " + state
	}
	return "-"
}

func (r *run) otherReplicaZones() []string {
	var zones []string
	for _, rep := range r.layout.GetReplicas() {
		if rep.GetNodeId() != r.layout.GetPrimary() {
			zones = append(zones, rep.GetZone())
		}
	}
	slices.Sort(zones)
	return zones
}

// pick chooses the node of zone that holds no replica, to show that a
// node reaches a volume over the network; else the zone's first node.
func (r *run) pick(zone string) *localcluster.Node {
	nodes := r.sys.NodesIn(zone)
	for _, n := range nodes {
		if r.role(n.ID) == "-" {
			return n
		}
	}
	return nodes[0]
}

// describe names a node with its zone and whether it holds a replica.
func (r *run) describe(n *localcluster.Node) string {
	if r.role(n.ID) == "-" {
		return fmt.Sprintf("%s in %s, which holds no replica", n.ID, n.Zone)
	}
	return fmt.Sprintf("%s in %s", n.ID, n.Zone)
}

// mountOn publishes, stages and publishes the volume on node n. It
// records the reverse of each call before making it: each is idempotent,
// and one cut short may have done its work.
// how says what NodeStage does with the filesystem, for the narration.
func (r *run) mountOn(ctx context.Context, n *localcluster.Node, how string) (*podMount, error) {
	m := r.newPodMount(n)
	m.reverse("ControllerUnpublishVolume", &r.td, r.controllerUnpublish)
	err := r.timedCall(ctx, "ControllerPublishVolume", func() error { return r.controllerPublish(ctx, m) }, func() string {
		return fmt.Sprintf("attachment generation %s recorded for %s", m.publishContext[csi.PublishGeneration], n.ID)
	})
	if err != nil {
		return nil, err
	}
	m.reverse("NodeUnstageVolume", &r.td, r.unstage)
	err = r.timedCall(ctx, "NodeStageVolume", func() error { return r.stage(ctx, m) }, func() string {
		return fmt.Sprintf("%s (loop device over a FUSE file over NBD to the primary) %s", m.device, how)
	})
	if err != nil {
		return nil, err
	}
	m.reverse("NodeUnpublishVolume", &r.td, r.unpublish)
	err = r.timedCall(ctx, "NodePublishVolume", func() error { return r.publish(ctx, m) }, func() string {
		return "bind-mounted into the pod at " + r.rel(m.target)
	})
	return m, err
}

// timedCall makes a CSI call as the sidecars and the kubelet do, again
// after a passing failure (see retry), and prints how long it took, what
// detail says of it, and every failure it was retried after.
func (r *run) timedCall(ctx context.Context, label string, call func() error, detail func() string) error {
	var retried []error
	err := r.timed(label, func() (string, error) {
		err := retry(ctx, retryBackoff, call, func(err error) { retried = append(retried, err) })
		return detail(), err
	})
	for _, e := range retried {
		r.say("   retried after: %v", e)
	}
	return err
}

// rel returns path relative to the work directory, for the narration.
func (r *run) rel(path string) string {
	if rel, err := filepath.Rel(r.o.Dir, path); err == nil {
		return rel
	}
	return path
}

// reverse records how to undo one of mountOn's calls.
func (m *podMount) reverse(call string, td *teardown, fn func(context.Context, *podMount) error) {
	u := td.push(call+" on "+m.node.ID, func(ctx context.Context) error { return fn(ctx, m) })
	m.undo = append(m.undo, undoCall{call: call, undo: u})
}

// unmountFrom makes the reverses of mountOn's calls, in reverse order, as
// the kubelet and the attacher do when the pod goes away.
func (r *run) unmountFrom(ctx context.Context, m *podMount) error {
	for i := len(m.undo) - 1; i >= 0; i-- {
		u := m.undo[i]
		if err := r.timed(u.call, func() (string, error) { return "on " + m.node.ID, u.undo.run(ctx) }); err != nil {
			return err
		}
	}
	return nil
}
