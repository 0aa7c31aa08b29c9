package csi

import (
	"github.com/trireme-csi/trireme/internal/testenv"

	"context"
	"fmt"
	"net"
	"os/exec"
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
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/apiserver"
	"github.com/trireme-csi/trireme/pkg/localcluster"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store/bolt"
)

// buildTrireme compiles the trireme binary into dir.
func buildTrireme(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "trireme")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/trireme-csi/trireme/cmd/trireme").CombinedOutput()
	if err != nil {
		t.Fatalf("build trireme: %v\n%s", err, out)
	}
	return bin
}

// ctrlRequireTools skips the test without the tools, or fails it under CI,
// where a missing tool is a broken environment.
func ctrlRequireTools(t *testing.T, tools ...string) {
	t.Helper()
	testenv.Require(t, tools...)
}

// ctrlCluster is a controller running in the test process, served over a
// unix socket, and three node agent processes in three zones that
// registered with it.
type ctrlCluster struct {
	ctrl    *controller.Controller
	tls     *localcluster.TLS // of the controller and the nodes
	apiAddr string
	client  csipb.ControllerClient
	cluster *localcluster.Cluster
}

// adminRegistry dials the controller's API with the admin certificate,
// until the test ends.
func (lc *ctrlCluster) adminRegistry(t *testing.T) *api.RegistryClient {
	t.Helper()
	asAdmin, err := lc.tls.DialOption(localcluster.AdminPeer, certs.RoleController)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := api.DialRegistry(lc.apiAddr, asAdmin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	return reg
}

func startCtrlCluster(t *testing.T) *ctrlCluster {
	t.Helper()
	dir := t.TempDir()
	bin := buildTrireme(t, dir)
	st, err := bolt.Open(filepath.Join(dir, "controller.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tlsc, err := localcluster.OpenTLS(filepath.Join(dir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	self, err := tlsc.Bundle(localcluster.ControllerPeer)
	if err != nil {
		t.Fatal(err)
	}
	toNodes := api.ClientCredentials(self, certs.AllowRoles(certs.RoleNode))
	ctrl := controller.New(controller.Options{Store: st, HeartbeatTimeout: time.Second,
		DialNode: func(_, addr string) (apiv1.NodeClient, error) { return api.DialNode(addr, toNodes) }})
	lc := &ctrlCluster{ctrl: ctrl, tls: tlsc}
	apiAddr := ctrlServeInternalAPI(t, ctrl, self)
	lc.apiAddr = apiAddr
	lc.client = ctrlServeCSI(t, ctrl, filepath.Join(dir, "csi.sock"))
	t.Cleanup(func() {
		ctrl.Close()
		st.Close()
	})

	opts := localcluster.Options{Binary: bin, Dir: dir, TLSDir: tlsc.Dir,
		ExtraArgs: []string{"--controller", apiAddr, "--heartbeat-interval", "200ms", "--ack-timeout", "1s"}}
	lc.cluster, err = localcluster.Start(context.Background(), opts, localcluster.ThreeZones)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lc.cluster.Stop)
	lc.waitLive(t, 3)
	return lc
}

// ctrlServeInternalAPI serves the controller's API as `trireme
// controller` does, under mutual TLS with its certificate self.
func ctrlServeInternalAPI(t *testing.T, ctrl *controller.Controller, self *certs.Bundle) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	edge := apiserver.New(ctrl)
	s := grpc.NewServer(api.ServerOptions(self, certs.AllowRoles(certs.RoleNode, certs.RoleAdmin), edge.Rules())...)
	edge.Register(s)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func ctrlServeCSI(t *testing.T, ctrl *controller.Controller, sock string) csipb.ControllerClient {
	t.Helper()
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewGRPCServer()
	csipb.RegisterControllerServer(s, NewControllerServer(ctrl))
	go s.Serve(l)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return csipb.NewControllerClient(conn)
}

// waitLive waits until n nodes heartbeat.
func (lc *ctrlCluster) waitLive(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		live := 0
		for _, s := range lc.ctrl.Nodes() {
			if s.Live {
				live++
			}
		}
		if live == n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%d nodes did not register", n)
}

func (lc *ctrlCluster) create(t *testing.T, name, preferredZone string) (string, replication.Layout) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := ctrlCreateRequest(name)
	req.CapacityRange.RequiredBytes = 16 << 20
	req.AccessibilityRequirements = &csipb.TopologyRequirement{Preferred: []*csipb.Topology{
		{Segments: map[string]string{"topology.kubernetes.io/zone": preferredZone}}}}
	resp, err := lc.client.CreateVolume(ctx, req)
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := resp.GetVolume().GetVolumeId()
	v, err := lc.ctrl.GetVolume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return id, v.Layout
}

// write writes a pattern through the primary's NBD export with qemu-io.
func (lc *ctrlCluster) write(t *testing.T, primary, volume string, pattern byte, off int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := fmt.Sprintf("write -P 0x%02x %d 1M", pattern, off)
	args := append(lc.cluster.Node(primary).QemuIOArgs(volume), "-c", cmd)
	out, err := exec.CommandContext(ctx, "qemu-io", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "wrote 1048576/1048576 bytes") {
		t.Fatalf("qemu-io %s on %s of %s: %v\n%s", cmd, volume, primary, err, out)
	}
}

// nodeVolume asks a node agent about its replica.
func (lc *ctrlCluster) nodeVolume(t *testing.T, node, volume string) (*apiv1.Volume, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := lc.cluster.Node(node).Client.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: volume})
	return resp.GetVolume(), err
}

func TestControllerWithNodeAgents(t *testing.T) {
	ctrlRequireTools(t, "qemu-io")
	lc := startCtrlCluster(t)

	t.Run("create places a replica in every zone, delete removes them", func(t *testing.T) {
		id, l := lc.create(t, "pvc-spread", "zone-b")
		if l.Primary != "node-b" || l.Epoch != 1 {
			t.Fatalf("primary %s at epoch %d, want node-b at 1", l.Primary, l.Epoch)
		}
		zones := map[string]bool{}
		for _, n := range lc.cluster.Nodes {
			v, err := lc.nodeVolume(t, n.ID, id)
			if err != nil {
				t.Fatalf("GetVolume on %s: %v", n.ID, err)
			}
			zones[n.Zone] = true
			wantRole := apiv1.Role_ROLE_REPLICA
			if n.ID == l.Primary {
				wantRole = apiv1.Role_ROLE_PRIMARY
			}
			if v.GetRole() != wantRole || v.GetLayout().GetEpoch() != 1 {
				t.Errorf("%s: role %v at epoch %d, want %v at 1", n.ID, v.GetRole(), v.GetLayout().GetEpoch(), wantRole)
			}
		}
		if len(zones) != 3 {
			t.Errorf("replicas in zones %v, want three", zones)
		}

		lc.write(t, l.Primary, id, 0x5a, 0)
		sums, err := lc.cluster.Checksums(context.Background(), id, "node-a", "node-b", "node-c")
		if err != nil {
			t.Fatal(err)
		}
		if sums["node-a"] != sums["node-b"] || sums["node-b"] != sums["node-c"] {
			t.Errorf("replicas differ after the write: %v", sums)
		}

		if _, err := lc.client.DeleteVolume(context.Background(), &csipb.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatalf("DeleteVolume: %v", err)
		}
		for _, n := range lc.cluster.Nodes {
			if _, err := lc.nodeVolume(t, n.ID, id); err == nil {
				t.Errorf("%s still holds a replica of %s", n.ID, id)
			}
		}
	})

	t.Run("a killed replica is faulted at epoch 2 and writes resume", func(t *testing.T) {
		id, l := lc.create(t, "pvc-fault", "zone-a")
		if l.Primary != "node-a" {
			t.Fatalf("primary %s, want node-a", l.Primary)
		}
		lc.write(t, "node-a", id, 0x11, 0)
		lc.cluster.Node("node-c").Kill()
		lc.write(t, "node-a", id, 0x22, 1<<20) // completes once the fault is persisted

		v, err := lc.ctrl.GetVolume(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		states := map[string]replication.ReplicaState{}
		for _, r := range v.Layout.Replicas {
			states[r.NodeID] = r.State
		}
		want := map[string]replication.ReplicaState{"node-a": replication.InSync, "node-b": replication.InSync, "node-c": replication.Faulted}
		if v.Layout.Epoch != 2 || fmt.Sprint(states) != fmt.Sprint(want) {
			t.Fatalf("persisted layout epoch %d %v, want 2 %v", v.Layout.Epoch, states, want)
		}
		b, err := lc.nodeVolume(t, "node-b", id)
		if err != nil || b.GetLayout().GetEpoch() != 2 {
			t.Errorf("node-b has layout epoch %d (%v), want the pushed epoch 2", b.GetLayout().GetEpoch(), err)
		}
		resp, err := lc.client.ControllerGetVolume(context.Background(), &csipb.ControllerGetVolumeRequest{VolumeId: id})
		if err != nil || !resp.GetStatus().GetVolumeCondition().GetAbnormal() {
			t.Errorf("ControllerGetVolume = %v, %v; want an abnormal condition", resp, err)
		}
		sums, err := lc.cluster.Checksums(context.Background(), id, "node-a", "node-b")
		if err != nil || sums["node-a"] != sums["node-b"] {
			t.Errorf("in-sync replicas differ: %v, %v", sums, err)
		}

		reg := lc.adminRegistry(t)
		loc, err := reg.LocateVolume(context.Background(), &apiv1.LocateVolumeRequest{VolumeId: id})
		if err != nil || loc.GetPrimaryNbdAddress() != lc.cluster.Node("node-a").NBDAddress || loc.GetLayout().GetEpoch() != 2 {
			t.Errorf("LocateVolume = %v, %v; want node-a's NBD address at epoch 2", loc, err)
		}

		lc.waitLive(t, 2)
		if _, err := lc.client.DeleteVolume(context.Background(), &csipb.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatalf("DeleteVolume with a node down: %v", err)
		}
	})
}
