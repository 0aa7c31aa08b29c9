package demo

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// writeTree mounts the volume on a node of the first zone, unpacks the
// source tree onto it and checks what landed.
func (r *run) writeTree(ctx context.Context) error {
	r.writer = r.pick(r.sys.Zones()[0])
	r.say("\n[3/6] Mounting it on %s, as the external-attacher and the kubelet would", r.describe(r.writer))
	m, err := r.mountOn(ctx, r.writer, "formatted "+r.o.FSType+" and mounted at the staging path")
	if err != nil {
		return err
	}
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
	if err := r.checkTree(ctx, m, "Checksums on "+r.writer.ID); err != nil {
		return err
	}
	return r.unmountFrom(ctx, m)
}

// moveAndVerify mounts the volume on a node of the third zone, as when
// the pod is rescheduled there, and verifies every file.
func (r *run) moveAndVerify(ctx context.Context) error {
	r.reader = r.pick(r.sys.Zones()[2])
	r.say("\n[4/6] Moving it to %s, as when the pod is rescheduled", r.describe(r.reader))
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
	r.say("   Every one of the %d files reads back on %s with the checksum it had when written on %s.",
		r.src.files, r.reader.ID, r.writer.ID)
	return r.unmountFrom(ctx, m)
}

// sayReach explains how node n reaches the volume.
func (r *run) sayReach(n *localcluster.Node) {
	p := r.sys.Node(r.layout.GetPrimary())
	r.say("   Every read and write on %s goes over the network to the primary %s in %s.", n.ID, p.ID, p.Zone)
}

// checkTree hashes every file under the pod's mount and compares with
// the source tree.
func (r *run) checkTree(ctx context.Context, m *podMount, label string) error {
	return r.timed(label, func() (string, error) {
		got, _, err := hashTree(ctx, filepath.Join(m.target, filepath.Base(r.o.Source)))
		if err != nil {
			return "", err
		}
		if d := diff(r.want, got); d != "" {
			return "", fmt.Errorf("the tree on %s differs from the source: %s", m.node.ID, d)
		}
		return fmt.Sprintf("sha256 of %d files: all match", len(got)), nil
	})
}

// compareReplicas asks every replica's node for the checksum of its copy.
func (r *run) compareReplicas(ctx context.Context) error {
	r.say("\n[5/6] Asking each replica's node for the sha256 of its copy of the volume")
	var ids []string
	for _, rep := range r.layout.GetReplicas() {
		ids = append(ids, rep.GetNodeId())
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
	return nil
}

// replicaZones counts the zones holding a replica.
func (r *run) replicaZones() int {
	zones := map[string]bool{}
	for _, rep := range r.layout.GetReplicas() {
		zones[rep.GetZone()] = true
	}
	return len(zones)
}

// summary recaps the run for a newcomer.
func (r *run) summary() {
	p := r.sys.Node(r.layout.GetPrimary())
	r.say("\nSummary")
	r.say("   %d nodes in %d zones; volume %s: primary on %s (%s), %d replicas in %d zones.",
		len(r.sys.Nodes), len(r.sys.Zones()), r.pvName, p.ID, p.Zone, len(r.layout.GetReplicas()), r.replicaZones())
	r.say("   Wrote %d files (%s) on %s in %s; verified all of them on %s in %s.",
		r.src.files, mib(r.src.bytes), r.writer.ID, seconds(r.unpackTime), r.reader.ID, seconds(r.verifyTime))
	r.say("   Replicas identical; nothing left mounted or attached. Total %s.", seconds(time.Since(r.start)))
}
