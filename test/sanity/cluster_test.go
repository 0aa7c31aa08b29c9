package csisanity

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// csiClients talk to the controller and to node-a, as the provisioner,
// the attacher and node-a's kubelet would.
type csiClients struct {
	ctrl csipb.ControllerClient
	node csipb.NodeClient
}

func dialCSI(t *testing.T, c *cluster) csiClients {
	t.Helper()
	dial := func(sock string) *grpc.ClientConn {
		conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	return csiClients{
		ctrl: csipb.NewControllerClient(dial(c.controllerSock)),
		node: csipb.NewNodeClient(dial(c.nodeSocks[0])),
	}
}

var ext4Writer = &csipb.VolumeCapability{
	AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: "ext4"}},
	AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}

// TestNodeServesVolumeFromAnotherZone stages on node-a (zone-a) a
// 3-replica volume whose primary is in zone-b, writes through the
// filesystem, and checks that every replica holds the same data; then
// stops node-c and checks that the volume stays usable and that its
// condition turns abnormal.
func TestNodeServesVolumeFromAnotherZone(t *testing.T) {
	requireKernel(t)
	c := startCluster(t)
	cl := dialCSI(t, c)
	ctx := context.Background()
	id := createPublished(t, cl, "zone-b")
	p := pathsOf(c, id)

	data := bytes.Repeat([]byte("replicated across three zones\n"), 100_000)
	t.Run("write", func(t *testing.T) {
		stageAndPublish(t, cl, id, p)
		writeFile(t, filepath.Join(p.target, "file"), data)
	})
	checkReplicasEqual(t, c, id)

	stopped := c.agents[2]
	if err := stopped.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Run("degraded", func(t *testing.T) {
		stageAndPublish(t, cl, id, p)
		if got, err := os.ReadFile(filepath.Join(p.target, "file")); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes, %v", len(got), err)
		}
		writeFile(t, filepath.Join(p.target, "after"), data[:1<<20])
		waitAbnormal(t, cl, id, p.target, "node-c")
	})
}

// volumePaths are where node-a stages and publishes a volume.
type volumePaths struct{ staging, target string }

func pathsOf(c *cluster, id string) volumePaths {
	return volumePaths{staging: filepath.Join(c.dir, "staging", id), target: filepath.Join(c.dir, "pods", id, "mount")}
}

// createPublished creates a 3-replica volume whose primary the controller
// places in zone, and publishes it to node-a.
func createPublished(t *testing.T, cl csiClients, zone string) string {
	t.Helper()
	ctx := context.Background()
	resp, err := cl.ctrl.CreateVolume(ctx, &csipb.CreateVolumeRequest{
		Name: "across-zones", CapacityRange: &csipb.CapacityRange{RequiredBytes: 256 << 20},
		VolumeCapabilities: []*csipb.VolumeCapability{ext4Writer},
		AccessibilityRequirements: &csipb.TopologyRequirement{
			Preferred: []*csipb.Topology{{Segments: map[string]string{api.ZoneTopologyKey: zone}}},
		},
	})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := resp.GetVolume().GetVolumeId()
	if _, err := cl.ctrl.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
		VolumeId: id, NodeId: "node-a", VolumeCapability: ext4Writer}); err != nil {
		t.Fatalf("ControllerPublishVolume: %v", err)
	}
	return id
}

// stageAndPublish stages and publishes on node-a, and undoes both when t
// ends.
func stageAndPublish(t *testing.T, cl csiClients, id string, p volumePaths) {
	t.Helper()
	ctx := context.Background()
	if _, err := cl.node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId: id, StagingTargetPath: p.staging, VolumeCapability: ext4Writer}); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	t.Cleanup(func() {
		if _, err := cl.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: p.staging}); err != nil {
			t.Errorf("NodeUnstageVolume: %v", err)
		}
	})
	if _, err := cl.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId: id, StagingTargetPath: p.staging, TargetPath: p.target, VolumeCapability: ext4Writer}); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	t.Cleanup(func() {
		if _, err := cl.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: p.target}); err != nil {
			t.Errorf("NodeUnpublishVolume: %v", err)
		}
	})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// checkReplicasEqual compares the checksums of every node's replica of a
// quiet volume.
func checkReplicasEqual(t *testing.T, c *cluster, id string) {
	t.Helper()
	sums := map[string]string{}
	asAdmin, err := c.tls.DialOption(localcluster.AdminPeer, certs.RoleNode)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.agents {
		nc, err := api.DialNode(a.Endpoints().API, asAdmin)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := nc.ChecksumReplica(context.Background(), &apiv1.ChecksumReplicaRequest{VolumeId: id})
		nc.Close()
		if err != nil {
			t.Fatalf("checksum at %s: %v", a.Endpoints().API, err)
		}
		sums[a.Endpoints().API] = resp.GetSha256()
	}
	first := sums[c.agents[0].Endpoints().API]
	for addr, sum := range sums {
		if sum != first {
			t.Errorf("replicas differ: %v (at %s)", sums, addr)
		}
	}
}

// waitAbnormal waits until NodeGetVolumeStats reports the volume's
// condition abnormal, naming node.
func waitAbnormal(t *testing.T, cl csiClients, id, path, node string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last *csipb.VolumeCondition
	for time.Now().Before(deadline) {
		resp, err := cl.node.NodeGetVolumeStats(context.Background(), &csipb.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: path})
		if err != nil {
			t.Fatalf("NodeGetVolumeStats: %v", err)
		}
		last = resp.GetVolumeCondition()
		if last.GetAbnormal() && strings.Contains(last.GetMessage(), node) {
			t.Logf("condition: %s", last.GetMessage())
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("condition never turned abnormal naming %s; last %v", node, last)
}
