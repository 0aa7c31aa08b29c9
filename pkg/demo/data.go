package demo

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// writeTree mounts the volume on a node of a zone that will survive the
// primary's, unpacks the source tree onto it and checks what landed. The
// volume stays mounted there for the pod's writes during the failover.
func (r *run) writeTree(ctx context.Context) error {
	r.writer = r.pick(r.survivingZones()[0])
	r.say("\n[3/7] Mounting it on %s, as the external-attacher and the kubelet would", r.describe(r.writer))
	m, err := r.mountOn(ctx, r.writer, "formatted "+r.o.FSType+" and mounted at the staging path")
	if err != nil {
		return err
	}
	r.mount = m
	r.sayReach(r.writer)
	err = r.timed("Unpacking the source tree", func() (string, error) {
		start := time.Now()
		err := unpack(ctx, r.o.Source, m.target)
		r.unpackTime = time.Since(start)
		return fmt.Sprintf("tar | tar -x, then syncfs: %d files, %.1f MiB/s", r.src.files,
			float64(r.src.bytes)/(1<<20)/r.unpackTime.Seconds()), err
	})
	if err != nil {
		return err
	}
	return r.checkTree(ctx, m, "Checksums on "+r.writer.ID)
}

// survivingZones are the zones other than the one the demo loses, the
// primary's before the failover: the pod is mounted in the first, and
// moved to the last.
func (r *run) survivingZones() []string {
	lost := r.zoneOf(r.layout.GetPrimary())
	if r.failover != nil {
		lost = r.failover.kill.Zone
	}
	var zones []string
	for _, z := range r.sys.Zones() {
		if z != lost {
			zones = append(zones, z)
		}
	}
	return zones
}

// moveAndVerify mounts the volume on a node of another surviving zone, as
// when the pod is rescheduled there, and verifies every file: the tree
// written before the failover and the files written during it, read
// through the new primary on a node whose page cache never saw them.
func (r *run) moveAndVerify(ctx context.Context) error {
	zones := r.survivingZones()
	r.reader = r.pick(zones[len(zones)-1])
	r.say("\n[5/7] Moving it to %s, as when the pod is rescheduled", r.describe(r.reader))
	m, err := r.mountOn(ctx, r.reader, "already "+r.o.FSType+", mounted at the staging path")
	if err != nil {
		return err
	}
	r.sayReach(r.reader)
	start := time.Now()
	if err := r.checkTree(ctx, m, "Checksums on "+r.reader.ID); err != nil {
		return err
	}
	r.verifyTime = time.Since(start)
	r.say("   Every one of the %d files written on %s reads back on %s with the checksum it had when written:",
		len(r.expected()), r.writer.ID, r.reader.ID)
	r.say("   the %d of the source tree, from before the kill, and the %d the pod wrote during the failover.",
		len(r.want), len(r.podWrites))
	return r.unmountFrom(ctx, m)
}

// sayReach explains how node n reaches the volume.
func (r *run) sayReach(n *localcluster.Node) {
	p := r.sys.Node(r.layout.GetPrimary())
	r.say("   Every read and write on %s goes over the network to the primary %s in %s.", n.ID, p.ID, p.Zone)
}

// checkTree hashes every file under the pod's mount and compares with
// what was written there.
func (r *run) checkTree(ctx context.Context, m *podMount, label string) error {
	return r.timed(label, func() (string, error) {
		got, _, err := hashTree(ctx, m.target)
		if err != nil {
			return "", err
		}
		if d := diff(r.expected(), got); d != "" {
			return "", fmt.Errorf("the files on %s differ from what was written: %s", m.node.ID, d)
		}
		return fmt.Sprintf("sha256 of %d files: all match", len(got)), nil
	})
}

// expected is every file written on the volume so far, by path below the
// mount: the source tree and whatever the pod wrote during the failover.
func (r *run) expected() manifest {
	m := prefixed(filepath.Base(r.o.Source), r.want)
	maps.Copy(m, r.podWrites)
	return m
}

// compareReplicas asks every replica's node for the checksum of its copy.
func (r *run) compareReplicas(ctx context.Context) error {
	r.say("\n[6/7] Asking each replica's node for the sha256 of its copy of the volume")
	placed := replicaNodes(r.layout)
	if err := r.waitInSync(ctx, "before comparing them"); err != nil {
		return err
	}
	if now := replicaNodes(r.layout); !slices.Equal(now, placed) {
		r.say("   The controller moved replicas since the failover: epoch %d, replicas on %s.",
			r.layout.GetEpoch(), strings.Join(now, ", "))
	}
	var ids []string
	for _, rep := range r.layout.GetReplicas() {
		if rep.GetState() == apiv1.ReplicaState_REPLICA_STATE_IN_SYNC && r.alive(rep.GetNodeId()) {
			ids = append(ids, rep.GetNodeId())
		}
	}
	if len(ids) < 2 {
		return fmt.Errorf("volume %s: %d replicas in sync on live nodes, nothing to compare", r.vol.GetVolumeId(), len(ids))
	}
	sums, err := r.sys.Checksums(ctx, r.vol.GetVolumeId(), ids...)
	if err != nil {
		return err
	}
	for _, id := range ids {
		n := r.sys.Node(id)
		r.say("   %-8s %s  %s", id, n.Zone, sums[id])
	}
	for _, id := range ids[1:] {
		if sums[id] != sums[ids[0]] {
			return fmt.Errorf("replicas differ: %v", sums)
		}
	}
	r.say("   The %d replicas hold identical data.", len(ids))
	if err := checkSpread(r.liveReplicas(), r.liveZones()); err != nil {
		return err
	}
	r.identical, r.spread = len(ids), r.replicaZoneList()
	r.say("   They are on %d nodes in %s: no surviving zone lacks a replica, no node holds two (I6).",
		len(ids), strings.Join(r.spread, " and "))
	return nil
}

// liveReplicas is the layout without the replicas on dead nodes, which
// the controller may still list while it waits for them to return.
func (r *run) liveReplicas() *apiv1.Layout {
	l := &apiv1.Layout{VolumeId: r.layout.GetVolumeId(), Epoch: r.layout.GetEpoch(), Primary: r.layout.GetPrimary()}
	for _, rep := range r.layout.GetReplicas() {
		if r.alive(rep.GetNodeId()) {
			l.Replicas = append(l.Replicas, rep)
		}
	}
	return l
}

// replicaNodes lists the nodes holding the layout's replicas.
func replicaNodes(l *apiv1.Layout) []string {
	var ids []string
	for _, rep := range l.GetReplicas() {
		ids = append(ids, rep.GetNodeId())
	}
	return ids
}

// liveZones are the zones where a node still runs.
func (r *run) liveZones() []string {
	var zones []string
	for _, n := range r.sys.LiveNodes() {
		if !slices.Contains(zones, n.Zone) {
			zones = append(zones, n.Zone)
		}
	}
	return zones
}

// checkSpread checks invariant I6 on a layout: never two replicas on one
// node, and never two in one zone while a zone among live holds none.
func checkSpread(l *apiv1.Layout, live []string) error {
	nodes := map[string]bool{}
	perZone := map[string]int{}
	for _, rep := range l.GetReplicas() {
		if nodes[rep.GetNodeId()] {
			return fmt.Errorf("volume %s: two replicas on %s", l.GetVolumeId(), rep.GetNodeId())
		}
		nodes[rep.GetNodeId()] = true
		perZone[rep.GetZone()]++
	}
	for _, z := range live {
		if perZone[z] > 0 {
			continue
		}
		for crowded, n := range perZone {
			if n > 1 {
				return fmt.Errorf("volume %s: %d replicas in %s while %s holds none", l.GetVolumeId(), n, crowded, z)
			}
		}
	}
	return nil
}

// replicaZoneList names the zones holding a replica, sorted.
func (r *run) replicaZoneList() []string {
	var zones []string
	for _, rep := range r.liveReplicas().GetReplicas() {
		if !slices.Contains(zones, rep.GetZone()) {
			zones = append(zones, rep.GetZone())
		}
	}
	slices.Sort(zones)
	return zones
}

// summary recaps the run for a newcomer.
func (r *run) summary() {
	f := r.failover
	r.say("\nSummary")
	r.say("   %d nodes in %d zones; volume %s.", len(r.sys.Nodes), len(r.sys.Zones()), r.pvName)
	r.say("   Wrote %d files (%s) on %s in %s.", r.src.files, mib(r.src.bytes), r.writer.ID, seconds(r.unpackTime))
	r.say("   Lost %s with the primary %s while the pod wrote; %s took over at epoch %d.",
		f.kill.Zone, f.before.GetPrimary(), f.promotee, f.epoch)
	r.say("   Kill to first write acknowledged on the new primary: %s; %s.",
		seconds(f.firstAck.done.Sub(f.kill.Sent)), f.replacement())
	r.say("   Verified all %d files on %s in %s; %d replicas identical, in %s.",
		len(r.expected()), r.reader.ID, seconds(r.verifyTime), r.identical, strings.Join(r.spread, " and "))
	r.say("   Nothing left running, mounted or attached. Total %s.", seconds(time.Since(r.start)))
}
