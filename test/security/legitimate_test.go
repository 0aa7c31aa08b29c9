package security

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/localcluster"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// newConnectionsServed checks that every server accepts a new legitimate
// connection and answers on it: the controller API (an operator locating
// volume A), each Node API (the controller listing replicas), each NBD
// server that is a primary (the frontend reading the known data), and
// each replication server (the primary of A binding to its replica at
// the current epoch, as after a reconnection).
func (s *system) newConnectionsServed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := s.volumes["A"]
	reg, _ := s.dialController(t, localcluster.AdminPeer)
	loc, err := reg.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: a.id})
	if err != nil {
		t.Fatalf("controller API: a new connection: %v", err)
	}
	for _, n := range s.Nodes {
		c := s.dialNode(t, n, localcluster.ControllerPeer)
		if _, err := c.ListVolumes(ctx, &apiv1.ListVolumesRequest{}); err != nil {
			t.Errorf("node API of %s: a new connection: %v", n.ID, err)
		}
	}
	for name, v := range s.volumes {
		if !s.holdsKnownData(t, v) {
			t.Errorf("NBD: a new connection to volume %s does not read its known data", name)
		}
	}
	layout := loc.GetLayout()
	for _, r := range layout.GetReplicas() {
		if r.GetNodeId() == layout.GetPrimary() {
			continue
		}
		if err := s.bindReplica(layout, r); err != nil {
			t.Errorf("replication of %s: a new connection: %v", r.GetNodeId(), err)
		}
	}
}

// bindReplica connects to a replica as the layout's primary and binds to
// the volume at the layout's epoch, which changes nothing on the replica.
func (s *system) bindReplica(l *apiv1.Layout, r *apiv1.ReplicaInfo) error {
	b, err := s.tls.Bundle(nodePeer(l.GetPrimary()))
	if err != nil {
		return err
	}
	c, err := tlsDial(r.GetAddress(), b.ClientConfig(certs.AllowRoles(certs.RoleNode)))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Write(encode(helloFrame(l.GetVolumeId(), r.GetNodeId(), l.GetEpoch()))); err != nil {
		return err
	}
	f, err := replication.ReadFrame(c)
	if err != nil {
		return err
	}
	if f.Op != replication.OpReply || f.Status != replication.StatusOK {
		return fmt.Errorf("hello refused: op %d status %d", f.Op, f.Status)
	}
	return nil
}

// legitimateClient is a frontend doing 4 KiB reads and writes on a
// volume, in a region of its own, checking every read against what it
// wrote.
type legitimateClient struct {
	v      *volume
	region int64 // first byte of the client's region
	blocks int64 // 4 KiB blocks in the region
	model  map[int64][]byte
	seq    int
}

// blockSize is the size of a legitimate client's reads and writes.
const blockSize = 4096

// latencies are the durations of a client's operations, by kind.
type latencies struct{ reads, writes []time.Duration }

// run does ops operations, a write then a read of the same block,
// and returns their latencies. Any failed or wrong operation fails t.
func (c *legitimateClient) run(t *testing.T, s *system, ops int) latencies {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nc, err := s.frontendClient(ctx, c.v)
	if err != nil {
		t.Errorf("legitimate client of %s: %v", c.v.id, err)
		return latencies{}
	}
	defer nc.Close()
	var l latencies
	got := make([]byte, blockSize)
	for i := 0; i < ops/2; i++ {
		c.seq++
		blk := int64(c.seq*7919) % c.blocks
		off := c.region + blk*blockSize
		data := pattern(blockSize, fmt.Sprintf("%s/%d", c.v.id, c.seq))
		start := time.Now()
		if err := nc.WriteAt(ctx, data, off, false); err != nil {
			t.Errorf("legitimate write %d to %s: %v", i, c.v.id, err)
			return l
		}
		l.writes = append(l.writes, time.Since(start))
		c.model[off] = data
		start = time.Now()
		if err := nc.ReadAt(ctx, got, off); err != nil {
			t.Errorf("legitimate read %d of %s: %v", i, c.v.id, err)
			return l
		}
		l.reads = append(l.reads, time.Since(start))
		if !bytes.Equal(got, data) {
			t.Errorf("legitimate read %d of %s at %d returned other data than written", i, c.v.id, off)
			return l
		}
	}
	return l
}

// verify reads back every block the client wrote.
func (c *legitimateClient) verify(t *testing.T, s *system) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nc, err := s.frontendClient(ctx, c.v)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	got := make([]byte, blockSize)
	for off, want := range c.model {
		if err := nc.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("volume %s at %d: read back %v, equal %v", c.v.id, off, err, bytes.Equal(got, want))
		}
	}
}

// checkReplicasAgree checks that the replicas the controller lists as
// InSync hold the same bytes.
func (s *system) checkReplicasAgree(t *testing.T, v *volume) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var insync []string
	for _, r := range s.locate(t, v.id).GetLayout().GetReplicas() {
		if api.StateFromProto(r.GetState()) == replication.InSync {
			insync = append(insync, r.GetNodeId())
		}
	}
	sums, err := s.Checksums(ctx, v.id, insync...)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range insync {
		if sums[n] != sums[insync[0]] {
			t.Errorf("volume %s: InSync replicas differ: %v", v.id, sums)
		}
	}
}
