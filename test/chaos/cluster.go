package chaos

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// Fixed ports: every process has its own network namespace.
const (
	controllerAPIPort = 7700
	replicationPort   = 7600
	nbdPort           = 10809
	nodeAPIPort       = 7601
)

// nodeCapacity is what each node offers for replicas; replica files are
// sparse.
const nodeCapacity = 8 << 30

// clusterSpec says what to start.
type clusterSpec struct {
	binary  string
	dir     string
	zones   []string // zone-a, zone-b, ...
	perZone int
	// nodeArgs and controllerArgs are added to every command line.
	nodeArgs       []string
	controllerArgs []string
}

// cluster is a controller and node agents, each in its own network
// namespace on one private segment with the test process.
type cluster struct {
	spec       clusterSpec
	tls        *localcluster.TLS // every process's --tls-dir
	nbdTLS     *tls.Config       // the workload's NBD clients, as an operator
	net        *network
	controller *controllerProc
	nodes      []*node
}

// controllerProc is the controller process and clients of its services.
type controllerProc struct {
	*proc
	host     *host
	socket   string
	db       string
	csiConn  *grpc.ClientConn
	registry *api.RegistryClient
}

// node is a node agent process and a client of its Node API.
type node struct {
	*proc
	id      string
	zone    string
	host    *host
	dataDir string
	client  *api.NodeClient
}

// startCluster creates the network and starts every process. On error it
// removes what it made.
func startCluster(ctx context.Context, spec clusterSpec) (_ *cluster, err error) {
	c := &cluster{spec: spec}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.destroy())
		}
	}()
	if c.tls, err = localcluster.OpenTLS(filepath.Join(spec.dir, "tls")); err != nil {
		return nil, err
	}
	admin, err := c.tls.Bundle(localcluster.AdminPeer)
	if err != nil {
		return nil, err
	}
	c.nbdTLS = admin.ClientConfig(certs.AllowRoles(certs.RoleNode))
	if c.net, err = newNetwork(); err != nil {
		return nil, err
	}
	if err = c.addController(); err != nil {
		return nil, err
	}
	if err = c.addNodes(); err != nil {
		return nil, err
	}
	if err = c.controller.start(); err != nil {
		return nil, err
	}
	for _, n := range c.nodes {
		if err = n.start(); err != nil {
			return nil, err
		}
	}
	return c, c.waitRegistered(ctx, 60*time.Second)
}

func (c *cluster) addController() error {
	h, err := c.net.addHost("ctl", 2)
	if err != nil {
		return err
	}
	dir := filepath.Join(c.spec.dir, "controller")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ctl := &controllerProc{host: h, socket: filepath.Join(dir, "csi.sock"), db: filepath.Join(dir, "controller.db")}
	args := []string{"controller", "--endpoint", "unix://" + ctl.socket, "--db", ctl.db,
		"--listen-address", h.ip, "--api-port", strconv.Itoa(controllerAPIPort), "--tls-dir", c.tls.Dir}
	if err := c.tls.Issue(localcluster.ControllerPeer); err != nil {
		return err
	}
	ctl.proc = &proc{name: "controller", ns: h.ns, binary: c.spec.binary,
		args: append(args, c.spec.controllerArgs...), logPath: filepath.Join(c.spec.dir, "controller.log")}
	if ctl.csiConn, err = grpc.NewClient("unix://"+ctl.socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return err
	}
	creds, err := c.tls.DialOption(localcluster.AdminPeer, certs.RoleController)
	if err != nil {
		return err
	}
	if ctl.registry, err = api.DialRegistry(ctl.apiAddress(), creds); err != nil {
		return err
	}
	c.controller = ctl
	return nil
}

func (ctl *controllerProc) apiAddress() string {
	return net.JoinHostPort(ctl.host.ip, strconv.Itoa(controllerAPIPort))
}

// csi is a client of the controller's CSI Controller service.
func (ctl *controllerProc) csi() csipb.ControllerClient {
	return csipb.NewControllerClient(ctl.csiConn)
}

func (c *cluster) addNodes() error {
	b := 11
	for r := 1; r <= c.spec.perZone; r++ {
		for _, z := range c.spec.zones {
			short := fmt.Sprintf("%s%d", z[len(z)-1:], r)
			if err := c.addNode("node-"+short, z, short, b); err != nil {
				return err
			}
			b++
		}
	}
	slices.SortFunc(c.nodes, func(a, b *node) int { return cmpString(a.id, b.id) })
	return nil
}

func (c *cluster) addNode(id, zone, short string, b int) error {
	h, err := c.net.addHost(short, b)
	if err != nil {
		return err
	}
	n := &node{id: id, zone: zone, host: h, dataDir: filepath.Join(c.spec.dir, id)}
	if err := os.MkdirAll(n.dataDir, 0o700); err != nil {
		return err
	}
	args := []string{"node", "--node-id", id, "--zone", zone, "--data-dir", n.dataDir,
		"--listen-address", h.ip,
		"--replication-port", strconv.Itoa(replicationPort),
		"--nbd-port", strconv.Itoa(nbdPort),
		"--api-port", strconv.Itoa(nodeAPIPort),
		"--controller", c.controller.apiAddress(),
		"--capacity-bytes", strconv.Itoa(nodeCapacity), "--tls-dir", c.tls.Dir}
	if err := c.tls.Issue(certs.Peer{Role: certs.RoleNode, Name: id}); err != nil {
		return err
	}
	creds, err := c.tls.DialOption(localcluster.AdminPeer, certs.RoleNode)
	if err != nil {
		return err
	}
	n.proc = &proc{name: id, ns: h.ns, binary: c.spec.binary,
		args: append(args, c.spec.nodeArgs...), logPath: filepath.Join(c.spec.dir, id+".log")}
	if n.client, err = api.DialNode(net.JoinHostPort(h.ip, strconv.Itoa(nodeAPIPort)), creds); err != nil {
		return err
	}
	c.nodes = append(c.nodes, n)
	return nil
}

// node returns the node with the id, or nil.
func (c *cluster) node(id string) *node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// nodesIn returns the nodes of a zone.
func (c *cluster) nodesIn(zone string) []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.zone == zone {
			out = append(out, n)
		}
	}
	return out
}

// hostByIP returns the namespace holding ip, nil for the test process.
func (c *cluster) hostByIP(ip string) *host {
	for _, h := range c.net.hosts {
		if h.ip == ip {
			return h
		}
	}
	return nil
}

// waitRegistered waits until the controller counts every node's capacity.
func (c *cluster) waitRegistered(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		missing, err := c.unregisteredZones(ctx)
		if err == nil && len(missing) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes of %v not registered with the controller after %s (%v; %v)", missing, timeout, err, c.exitedProcesses())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *cluster) unregisteredZones(ctx context.Context) ([]string, error) {
	var missing []string
	for _, z := range c.spec.zones {
		req := &csipb.GetCapacityRequest{AccessibleTopology: &csipb.Topology{Segments: map[string]string{api.ZoneTopologyKey: z}}}
		resp, err := c.controller.csi().GetCapacity(ctx, req)
		if err != nil {
			return nil, err
		}
		// The zone counts the capacity of its live nodes only; what
		// volumes use of it is far below one node's.
		if resp.GetAvailableCapacity() <= int64(len(c.nodesIn(z))-1)*nodeCapacity+nodeCapacity/2 {
			missing = append(missing, z)
		}
	}
	return missing, nil
}

// exitedProcesses names the processes that should run and do not.
func (c *cluster) exitedProcesses() error {
	var errs []error
	if !c.controller.running() {
		errs = append(errs, fmt.Errorf("controller is not running (see %s)", c.controller.logPath))
	}
	for _, n := range c.nodes {
		if !n.running() {
			errs = append(errs, fmt.Errorf("%s is not running (see %s)", n.id, n.logPath))
		}
	}
	return errors.Join(errs...)
}

// destroy kills every process, closes the clients and removes the
// network. It is safe on a partly started cluster.
func (c *cluster) destroy() error {
	if c.controller != nil {
		c.controller.kill()
		if c.controller.csiConn != nil {
			c.controller.csiConn.Close()
		}
		if c.controller.registry != nil {
			c.controller.registry.Close()
		}
	}
	for _, n := range c.nodes {
		n.kill()
		n.client.Close()
	}
	if c.net == nil {
		return nil
	}
	return c.net.destroy()
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// hostByNS returns the host of a namespace name.
func (c *cluster) hostByNS(ns string) *host {
	for _, h := range c.net.hosts {
		if h.ns == ns {
			return h
		}
	}
	return nil
}
