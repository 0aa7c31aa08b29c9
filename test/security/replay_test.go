package security

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// TestReplayedReplicationFrameWithOldEpochIsRefused captures what a
// primary sends a replica at one epoch (a hello binding the connection,
// then a write over the known data), raises the epoch with a layout
// change (an expansion), and replays the capture to the replica over a
// connection made with the primary's own node certificate. The replica
// refuses the hello as a stale epoch; a write carrying the old epoch on a
// connection bound at the current one is refused the same way; the
// replica's data and epoch do not change.
func TestReplayedReplicationFrameWithOldEpochIsRefused(t *testing.T) {
	s := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := s.createVolume(ctx, "security-replay", "zone-c", "node-c")
	if err != nil {
		t.Fatal(err)
	}
	old := s.locate(t, v.id).GetLayout()
	target := replicaOtherThan(t, old, old.GetPrimary())
	overwrite := bytes.Repeat([]byte{0xEE}, 4096)
	capturedHello := encode(helloFrame(v.id, target.GetNodeId(), old.GetEpoch()))
	capturedWrite := encode(writeFrame(2, old.GetEpoch(), 0, overwrite))

	newEpoch := s.raiseEpoch(t, v, old.GetEpoch(), target.GetNodeId())
	t.Logf("volume %s: captured at epoch %d, replayed to %s at epoch %d", v.id, old.GetEpoch(), target.GetNodeId(), newEpoch)
	before := s.snapshot(t)
	sender := s.bundle(t, nodePeer(old.GetPrimary())).ClientConfig(certs.AllowRoles(certs.RoleNode))

	t.Run("captured hello and write", func(t *testing.T) {
		c := dialReplication(t, target.GetAddress(), sender)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(append(capturedHello, capturedWrite...)); err != nil {
			t.Fatal(err)
		}
		expectStale(t, readReply(t, c), 1, newEpoch)
		if f, err := replication.ReadFrame(c); err == nil {
			t.Fatalf("the replica answered the write after refusing the hello: %+v", f)
		}
	})
	t.Run("captured write on a current connection", func(t *testing.T) {
		c := dialReplication(t, target.GetAddress(), sender)
		c.SetDeadline(time.Now().Add(ioTimeout))
		hello := encode(helloFrame(v.id, target.GetNodeId(), newEpoch))
		if _, err := c.Write(append(hello, capturedWrite...)); err != nil {
			t.Fatal(err)
		}
		if r := readReply(t, c); r.Status != replication.StatusOK {
			t.Fatalf("hello at the current epoch: status %d", r.Status)
		}
		expectStale(t, readReply(t, c), 2, newEpoch)
	})
	s.checkUnchanged(t, before)
	if !s.holdsKnownData(t, v) {
		t.Errorf("volume %s no longer reads back its known data", v.id)
	}
}

// replicaOtherThan returns a replica of the layout on another node.
func replicaOtherThan(t *testing.T, l *apiv1.Layout, node string) *apiv1.ReplicaInfo {
	t.Helper()
	for _, r := range l.GetReplicas() {
		if r.GetNodeId() != node {
			return r
		}
	}
	t.Fatalf("layout %v has no replica outside %s", l, node)
	return nil
}

// raiseEpoch expands the volume through CSI, which commits the new size
// with a new epoch, then writes through the frontend so that the primary's
// frames carry the new epoch to the replica on node (a layout that keeps
// the primary leaves the replica's epoch to the primary's frames), and
// returns the epoch the replica then holds.
func (s *system) raiseEpoch(t *testing.T, v *volume, from uint64, node string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v.size += 4 << 20
	if _, err := s.csiController().ControllerExpandVolume(ctx, &csipb.ControllerExpandVolumeRequest{
		VolumeId: v.id, CapacityRange: &csipb.CapacityRange{RequiredBytes: v.size}}); err != nil {
		t.Fatalf("expand %s: %v", v.id, err)
	}
	if e := s.locate(t, v.id).GetLayout().GetEpoch(); e <= from {
		t.Fatalf("the expansion left volume %s at epoch %d", v.id, e)
	}
	c, err := s.frontendClient(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for {
		if err := c.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), knownDataSize, true); err != nil {
			t.Fatalf("write after the expansion: %v", err)
		}
		resp, err := s.Node(node).Client.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: v.id})
		if err == nil && resp.GetVolume().GetEpoch() > from {
			return resp.GetVolume().GetEpoch()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the replica on %s is still at epoch %d after the expansion: %v", node, from, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readReply reads one reply frame.
func readReply(t *testing.T, c *tls.Conn) replication.Frame {
	t.Helper()
	f, err := replication.ReadFrame(c)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if f.Op != replication.OpReply {
		t.Fatalf("frame op %d, want a reply", f.Op)
	}
	return f
}

// expectStale checks that a reply refuses request id as a stale epoch,
// carrying the replica's epoch.
func expectStale(t *testing.T, r replication.Frame, id, epoch uint64) {
	t.Helper()
	if r.ID != id || r.Status != replication.StatusStaleEpoch || r.Epoch != epoch {
		t.Fatalf("reply to %d: id %d status %d epoch %d; want status %d (stale epoch) and epoch %d",
			id, r.ID, r.Status, r.Epoch, replication.StatusStaleEpoch, epoch)
	}
}
