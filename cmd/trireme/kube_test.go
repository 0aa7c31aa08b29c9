package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/trireme-csi/trireme/internal/kubetest"
	"github.com/trireme-csi/trireme/internal/testcerts"
	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/kube"
	storekube "github.com/trireme-csi/trireme/pkg/store/kube"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// trireme builds the binary once for the tests of this package.
func trireme(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trireme-bin")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "trireme")
		out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("%s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binary
}

// TestControllersFailOverThroughTheLease runs two controllers with
// --leader-elect on a real API server and a node agent that finds the
// leader through the Lease: the standby serves nothing, the node agent
// takes its zone from its Node object and registers with the leader, and
// when the leader is killed the standby leads within the lease duration
// and the node agent registers with it.
func TestControllersFailOverThroughTheLease(t *testing.T) {
	cp := kubetest.Start(t, kubetest.Options{})
	bin := trireme(t)
	client := setUpCluster(t, cp)
	dir := t.TempDir()
	const lease = 4 * time.Second
	// The node reaches the leader through its relay, under mutual TLS.
	tlsDir := filepath.Join(dir, "tls")
	testcerts.Write(t, tlsDir, testcerts.CA(t), certs.Peer{Role: certs.RoleController}, certs.Peer{Role: certs.RoleNode, Name: "n1"})

	a := startController(t, cp, bin, dir, "a", "127.0.0.31", lease, tlsDir)
	waitLeader(t, client, a.addr, 2*lease)
	waitSocket(t, a.socket, 10*time.Second)
	b := startController(t, cp, bin, dir, "b", "127.0.0.32", lease, tlsDir)
	time.Sleep(lease / 2)
	if _, err := os.Stat(b.socket); err == nil {
		t.Fatal("the standby controller opened its CSI socket")
	}

	kubetest.StartProcess(t, "node", bin, "node", "--kubeconfig", cp.Kubeconfig(), "--node-id", "n1",
		"--leader-election-namespace", "trireme", "--data-dir", filepath.Join(dir, "n1"),
		"--listen-address", "127.0.0.33", "--replication-port", "0", "--nbd-port", "0", "--api-port", "0",
		"--capacity-bytes", strconv.Itoa(10<<30), "--tls-dir", tlsDir)
	waitCapacity(t, a.socket, 20*time.Second)
	waitNodeZone(t, cp, "n1", "zone-a")

	a.proc.Kill()
	start := time.Now()
	waitLeader(t, client, b.addr, 3*lease)
	waitSocket(t, b.socket, 10*time.Second)
	if took := time.Since(start); took > 2*lease {
		t.Errorf("the standby led %v after the leader died; lease duration %v", took, lease)
	}
	waitCapacity(t, b.socket, 20*time.Second)
}

// setUpCluster installs the CRDs, the namespace of the Lease and the
// Node object of n1 in zone-a.
func setUpCluster(t *testing.T, cp *kubetest.ControlPlane) kubernetes.Interface {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := storekube.InstallCRDs(ctx, cp.RESTConfig(), filepath.Join("..", "..", "deploy", "crds")); err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "trireme"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{kube.ZoneLabel: "zone-a"}}}
	if _, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return client
}

type controllerProc struct {
	proc   *kubetest.Process
	addr   string // internal API
	socket string // CSI
}

func startController(t *testing.T, cp *kubetest.ControlPlane, bin, dir, name, ip string, lease time.Duration, tlsDir string) controllerProc {
	port := kubetest.FreePort(t, ip)
	c := controllerProc{addr: ip + ":" + strconv.Itoa(port), socket: filepath.Join(dir, name+".sock")}
	c.proc = kubetest.StartProcess(t, "controller-"+name, bin, "controller", "--store=kube",
		"--kubeconfig", cp.Kubeconfig(), "--leader-elect", "--leader-election-namespace", "trireme",
		"--leader-election-lease-duration", lease.String(), "--leader-election-renew-deadline", (lease * 3 / 4).String(),
		"--leader-election-retry-period", (lease / 8).String(),
		"--endpoint", "unix://"+c.socket, "--listen-address", ip, "--api-port", strconv.Itoa(port),
		"--heartbeat-timeout", "2s", "--tls-dir", tlsDir)
	return c
}

func waitLeader(t *testing.T, client kubernetes.Interface, addr string, d time.Duration) {
	t.Helper()
	var holder string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		l, err := client.CoordinationV1().Leases("trireme").Get(t.Context(), kube.DefaultLeaseName, metav1.GetOptions{})
		if err == nil {
			holder = ptr.Deref(l.Spec.HolderIdentity, "")
			if kube.LeaderAddress(holder) == addr {
				return
			}
		}
	}
	t.Fatalf("lease holder %q, want the controller at %s within %v", holder, addr, d)
}

func waitSocket(t *testing.T, path string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
	t.Fatalf("no socket %s within %v", path, d)
}

// waitCapacity waits until the controller behind socket counts capacity
// in zone-a: a node there has registered with it.
func waitCapacity(t *testing.T, socket string, d time.Duration) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := csipb.NewControllerClient(conn)
	req := &csipb.GetCapacityRequest{AccessibleTopology: &csipb.Topology{Segments: map[string]string{kube.ZoneLabel: "zone-a"}}}
	var last string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := c.GetCapacity(t.Context(), req)
		if err == nil && resp.AvailableCapacity > 0 {
			return
		}
		last = resp.String()
		if err != nil {
			last = err.Error()
		}
	}
	t.Fatalf("no capacity in zone-a at %s within %v: %s", socket, d, last)
}

// waitNodeZone waits for the TriremeNode of id to carry the zone.
func waitNodeZone(t *testing.T, cp *kubetest.ControlPlane, id, zone string) {
	t.Helper()
	s, err := storekube.New(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.GetNode(t.Context(), id)
	if err != nil || n.Zone != zone {
		t.Fatalf("node record %+v, %v; want zone %s", n, err, zone)
	}
}

func TestNodeIDFromNodeName(t *testing.T) {
	t.Setenv("NODE_NAME", "worker-7")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	tests := []struct {
		flag, want string
	}{
		{"", "worker-7"},
		{"n1", "n1"},
	}
	for _, tc := range tests {
		cfg := agent.Config{NodeID: tc.flag}
		stop, err := (&nodeKube{lease: &leaseFlags{}}).apply(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		stop()
		if cfg.NodeID != tc.want || cfg.ControllerAddress != "" {
			t.Errorf("--node-id %q: node id %q, controller %q; want %q and no controller",
				tc.flag, cfg.NodeID, cfg.ControllerAddress, tc.want)
		}
	}
}

func TestControllerStoreFlagsRefused(t *testing.T) {
	tests := []struct {
		name  string
		store string
		elect bool
		want  string
	}{
		{"unknown store", "etcd", false, `--store="etcd": want bolt or kube`},
		{"leader election on a local file", storeBolt, true, "--leader-elect needs --store=kube: every replica must see the same records"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := &controllerKube{store: tc.store, elect: tc.elect, lease: &leaseFlags{}}
			_, err := k.openStore(filepath.Join(t.TempDir(), "db"), &controller.Options{})
			if err == nil || err.Error() != tc.want {
				t.Errorf("openStore: error %v, want %q", err, tc.want)
			}
		})
	}
}
