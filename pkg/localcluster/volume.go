package localcluster

import (
	"context"
	"fmt"
	"net"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// CreateVolume creates a replica of the volume on each named node and
// gives every node the first layout (epoch 1), with the first node as
// primary and every replica InSync: an empty volume has nothing to copy.
func (c *Cluster) CreateVolume(ctx context.Context, id string, size int64, nodeIDs ...string) (replication.Layout, error) {
	l := replication.Layout{VolumeID: id, Size: size, Epoch: 1}
	for i, nid := range nodeIDs {
		n := c.Node(nid)
		if n == nil {
			return l, fmt.Errorf("create volume %s: no node %q", id, nid)
		}
		if i == 0 {
			l.Primary = nid
		}
		l.Replicas = append(l.Replicas, replication.ReplicaInfo{
			NodeID: nid, Zone: n.Zone, Address: n.ReplicationAddr, State: replication.InSync,
		})
		req := &apiv1.CreateReplicaRequest{VolumeId: id, SizeBytes: size}
		if _, err := n.Client.CreateReplica(ctx, req); err != nil {
			return l, fmt.Errorf("create replica of %s on %s: %w", id, nid, err)
		}
	}
	return l, c.SetLayout(ctx, l)
}

// SetLayout sends the layout to every node holding a replica, the primary
// last so that it connects to replicas that already know the volume.
func (c *Cluster) SetLayout(ctx context.Context, l replication.Layout) error {
	var primary *Node
	for _, r := range l.Replicas {
		n := c.Node(r.NodeID)
		if n == nil {
			return fmt.Errorf("set layout of %s: no node %q", l.VolumeID, r.NodeID)
		}
		if r.NodeID == l.Primary {
			primary = n
			continue
		}
		if err := setLayout(ctx, n, l); err != nil {
			return err
		}
	}
	if primary == nil {
		return fmt.Errorf("set layout of %s: primary %q holds no replica", l.VolumeID, l.Primary)
	}
	return setLayout(ctx, primary, l)
}

func setLayout(ctx context.Context, n *Node, l replication.Layout) error {
	req := &apiv1.SetLayoutRequest{Layout: api.LayoutToProto(l)}
	if _, err := n.Client.SetLayout(ctx, req); err != nil {
		return fmt.Errorf("set layout of %s on %s: %w", l.VolumeID, n.ID, err)
	}
	return nil
}

// Checksums returns each node's checksum of its replica of the volume.
func (c *Cluster) Checksums(ctx context.Context, volumeID string, nodeIDs ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, nid := range nodeIDs {
		n := c.Node(nid)
		if n == nil {
			return nil, fmt.Errorf("checksum %s: no node %q", volumeID, nid)
		}
		resp, err := n.Client.ChecksumReplica(ctx, &apiv1.ChecksumReplicaRequest{VolumeId: volumeID})
		if err != nil {
			return nil, fmt.Errorf("checksum %s on %s: %w", volumeID, nid, err)
		}
		out[nid] = resp.GetSha256()
	}
	return out, nil
}

// NBDURI is the URI libnbd clients (nbdinfo, nbdcopy, fio's nbd engine)
// reach the volume on its primary with, over TLS with the harness's
// operator certificate.
func (n *Node) NBDURI(volumeID string) string {
	if n.tls == nil { // Options.Insecure
		return "nbd://" + n.NBDAddress + "/" + volumeID
	}
	return "nbds://" + n.NBDAddress + "/" + volumeID + "?tls-certificates=" + n.tls.AdminDir()
}

// QemuIOArgs are the arguments that make qemu-io (or qemu-img) open the
// volume on its primary, over TLS with the harness's operator
// certificate.
func (n *Node) QemuIOArgs(volumeID string) []string {
	host, port, _ := net.SplitHostPort(n.NBDAddress)
	if n.tls == nil { // Options.Insecure
		return []string{"-f", "raw", "nbd://" + n.NBDAddress + "/" + volumeID}
	}
	return []string{
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + n.tls.AdminDir(),
		"--image-opts", fmt.Sprintf("driver=nbd,server.type=inet,server.host=%s,server.port=%s,export=%s,tls-creds=tls0",
			host, port, volumeID),
	}
}
