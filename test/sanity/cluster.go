// Package csisanity runs csi-sanity (github.com/kubernetes-csi/csi-test)
// against a whole Trireme on this machine: a controller with an embedded
// store, and three node agents in three zones on 127.0.0.1, 127.0.0.2
// and 127.0.0.3, with the real data plane, loop devices, FUSE and
// mounts. The test packages mount/ and block/ run it once per access
// type: Ginkgo runs one suite per process.
package csisanity

import (
	"github.com/trireme-csi/trireme/internal/testenv"

	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/apiserver"
	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/frontend"
	"github.com/trireme-csi/trireme/pkg/localcluster"
	"github.com/trireme-csi/trireme/pkg/store/bolt"
)

// nodeSpec places one node agent.
type nodeSpec struct{ id, zone, ip string }

// threeZones are the node agents the suite runs against; csi-sanity
// talks to the first one's Node service.
var threeZones = []nodeSpec{
	{"node-a", "zone-a", "127.0.0.1"},
	{"node-b", "zone-b", "127.0.0.2"},
	{"node-c", "zone-c", "127.0.0.3"},
}

// nodeCapacity is what each agent offers for replicas; replica files are
// sparse, so it need not exist on disk.
const nodeCapacity = 1 << 40

// cluster is a running controller and node agents.
type cluster struct {
	dir            string
	tls            *localcluster.TLS // every component's certificates
	controllerSock string
	nodeSocks      []string
	mountDirs      []string
	agents         []*agent.Agent
}

// requireKernel skips the test without root, FUSE, loop devices or the
// filesystem tools, and fails it under CI, which must have them all.
func requireKernel(t *testing.T) {
	t.Helper()
	testenv.Require(t, append(testenv.Kernel, "mkfs.ext4", "mkfs.xfs")...)
}

// startCluster starts the controller and the agents, and stops them,
// and removes every mount and loop device they leave, when t ends.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir()}
	t.Cleanup(func() { c.checkNoLeftovers(t) })
	var err error
	if c.tls, err = localcluster.OpenTLS(filepath.Join(c.dir, "tls")); err != nil {
		t.Fatal(err)
	}
	ctrl := c.startController(t)
	apiAddr := c.serveInternalAPI(t, ctrl)
	for _, n := range threeZones {
		c.startAgent(t, n, apiAddr)
	}
	waitLive(t, ctrl, len(threeZones))
	return c
}

func (c *cluster) startController(t *testing.T) *controller.Controller {
	t.Helper()
	st, err := bolt.Open(filepath.Join(c.dir, "controller.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	self := c.bundle(t, localcluster.ControllerPeer)
	toNodes := api.ClientCredentials(self, certs.AllowRoles(certs.RoleNode))
	ctrl := controller.New(controller.Options{Store: st,
		DialNode: func(_, addr string) (apiv1.NodeClient, error) { return api.DialNode(addr, toNodes) }})
	t.Cleanup(func() {
		ctrl.Close()
		st.Close()
	})
	c.controllerSock = filepath.Join(c.dir, "controller.sock")
	l, err := csi.Listen("unix://" + c.controllerSock)
	if err != nil {
		t.Fatal(err)
	}
	s := csi.NewGRPCServer()
	csipb.RegisterIdentityServer(s, &csi.IdentityServer{Version: "sanity", Controller: true})
	csipb.RegisterControllerServer(s, csi.NewControllerServer(ctrl))
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return ctrl
}

// bundle returns the certificate of p.
func (c *cluster) bundle(t *testing.T, p certs.Peer) *certs.Bundle {
	t.Helper()
	b, err := c.tls.Bundle(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serveInternalAPI serves the controller's API as `trireme controller
// --tls-dir` does.
func (c *cluster) serveInternalAPI(t *testing.T, ctrl *controller.Controller) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	edge := apiserver.New(ctrl)
	self := c.bundle(t, localcluster.ControllerPeer)
	s := grpc.NewServer(api.ServerOptions(self, certs.AllowRoles(certs.RoleNode, certs.RoleAdmin), edge.Rules())...)
	edge.Register(s)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// startAgent runs a node agent with its CSI Node service in this process.
func (c *cluster) startAgent(t *testing.T, n nodeSpec, apiAddr string) {
	t.Helper()
	dataDir := filepath.Join(c.dir, n.id)
	if err := c.tls.IssueNode(n.id, n.ip); err != nil {
		t.Fatal(err)
	}
	sec := &agent.Security{
		Node:     c.bundle(t, certs.Peer{Role: certs.RoleNode, Name: n.id}),
		Frontend: c.bundle(t, certs.Peer{Role: certs.RoleFrontend, Name: n.id}),
	}
	a, err := agent.New(agent.Config{
		NodeID: n.id, Zone: n.zone, DataDir: dataDir, ListenAddress: n.ip,
		ControllerAddress: apiAddr, CapacityBytes: nodeCapacity,
		HeartbeatInterval: 200 * time.Millisecond, AckTimeout: 2 * time.Second,
		Security: sec,
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(c.dir, n.id+".sock")
	mountDir := filepath.Join(dataDir, "csi", "attach")
	if err := a.StartCSI(context.Background(), agent.CSIConfig{Endpoint: "unix://" + sock, Version: "sanity", MountDir: mountDir}); err != nil {
		t.Fatal(err)
	}
	c.agents = append(c.agents, a)
	c.nodeSocks = append(c.nodeSocks, sock)
	c.mountDirs = append(c.mountDirs, mountDir)
	served := make(chan error, 1)
	go func() { served <- a.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Errorf("shut down %s: %v", n.id, err)
		}
		<-served
	})
}

// waitLive waits until n nodes heartbeat to the controller.
func waitLive(t *testing.T, ctrl *controller.Controller, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		live := 0
		for _, s := range ctrl.Nodes() {
			if s.Live {
				live++
			}
		}
		if live == n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("fewer than %d nodes registered with the controller", n)
}

// checkNoLeftovers fails the test for every mount and loop device left
// under the cluster's directory, as /proc/mounts and sysfs show them,
// then removes them so that the machine stays clean.
func (c *cluster) checkNoLeftovers(t *testing.T) {
	dir, _ := filepath.EvalSymlinks(c.dir)
	for _, m := range mountsUnder(t, dir) {
		t.Errorf("mount left behind: %s", m)
		unix.Unmount(m, unix.MNT_DETACH)
	}
	for _, d := range c.mountDirs {
		if err := frontend.Cleanup(d); err != nil {
			t.Errorf("loop devices or FUSE mounts left behind: %v", err)
		}
	}
	if out, err := exec.Command("losetup", "-a").CombinedOutput(); err == nil && strings.Contains(string(out), dir) {
		t.Errorf("losetup -a still lists %s:\n%s", dir, out)
	}
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(t *testing.T, dir string) []string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			out = append([]string{f[1]}, out...)
		}
	}
	return out
}

// String describes the cluster, for logs.
func (c *cluster) String() string {
	return fmt.Sprintf("controller %s, nodes %v", c.controllerSock, c.nodeSocks)
}
