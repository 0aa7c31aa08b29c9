package security

import (
	"bytes"
	"context"
	"testing"
	"time"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// TestNodeCertificateCannotWriteAnotherPrimarysReplica: a node that is
// not a volume's primary connects to one of its replicas with its own,
// valid node certificate and tries to bind at the current epoch and at a
// far higher one (which, accepted, would lock the real primary out). The
// replica refuses both hellos as forbidden, and neither its epoch nor its
// data changes; a write sent after the hello is never answered.
func TestNodeCertificateCannotWriteAnotherPrimarysReplica(t *testing.T) {
	s := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	v, err := s.createVolume(ctx, "security-impersonate", "zone-b", "node-b")
	if err != nil {
		t.Fatal(err)
	}
	l := s.locate(t, v.id).GetLayout()
	target := replicaOtherThan(t, l, l.GetPrimary())
	intruder := ""
	for _, n := range s.Nodes {
		if n.ID != l.GetPrimary() && n.ID != target.GetNodeId() {
			intruder = n.ID
		}
	}
	if intruder == "" {
		t.Fatalf("no third node outside primary %s and replica %s", l.GetPrimary(), target.GetNodeId())
	}
	before := s.snapshot(t)
	sender := s.bundle(t, nodePeer(intruder)).ClientConfig(certs.AllowRoles(certs.RoleNode))
	overwrite := encode(writeFrame(2, l.GetEpoch()+1000, 0, bytes.Repeat([]byte{0xAB}, 4096)))
	for _, epoch := range []uint64{l.GetEpoch(), l.GetEpoch() + 1000} {
		c := dialReplication(t, target.GetAddress(), sender)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if _, err := c.Write(append(encode(helloFrame(v.id, target.GetNodeId(), epoch)), overwrite...)); err != nil {
			t.Fatal(err)
		}
		if r := readReply(t, c); r.ID != 1 || r.Status != replication.StatusForbidden {
			t.Fatalf("hello from %s at epoch %d: id %d status %d, want status %d (forbidden)",
				intruder, epoch, r.ID, r.Status, replication.StatusForbidden)
		}
		if f, err := replication.ReadFrame(c); err == nil {
			t.Fatalf("the replica answered a write after refusing the hello: %+v", f)
		}
	}
	resp, err := s.Node(target.GetNodeId()).Client.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: v.id})
	if err != nil || resp.GetVolume().GetEpoch() > l.GetEpoch() {
		t.Errorf("replica on %s at epoch %d (%v), want at most %d", target.GetNodeId(), resp.GetVolume().GetEpoch(), err, l.GetEpoch())
	}
	s.checkUnchanged(t, before)
	if !s.holdsKnownData(t, v) {
		t.Errorf("volume %s no longer reads back its known data", v.id)
	}
}
