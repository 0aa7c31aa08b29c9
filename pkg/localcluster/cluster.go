// Package localcluster runs Trireme's node agents as separate processes on
// one machine, each on its own loopback address and in its own zone. The
// demo, the benchmarks and end-to-end tests use it.
package localcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// NodeSpec names one node agent to start.
type NodeSpec struct {
	ID   string
	Zone string
	IP   string // a loopback address such as 127.0.0.2
}

// Node is a running node agent process.
type Node struct {
	NodeSpec
	DataDir         string
	APIAddress      string
	NBDAddress      string
	ReplicationAddr string
	// CSISocket is the path of the node's CSI Node service socket, empty
	// unless Options.CSI.
	CSISocket string
	Client    *api.NodeClient
	// CSIConn is a client connection to CSISocket, nil without it.
	CSIConn *grpc.ClientConn

	proc *process
	tls  *TLS
}

// Cluster is a set of node agent processes.
type Cluster struct {
	Nodes []*Node
	// TLS is the certificate directory every node runs with.
	TLS *TLS
}

// Options tune the node processes.
type Options struct {
	// Binary is the trireme executable.
	Binary string
	// Dir holds each node's data directory and log.
	Dir string
	// Controller is host:port of the controller's internal API; empty
	// runs the nodes without a controller.
	Controller string
	// CSI makes every node serve the CSI Node service on a unix socket,
	// Dir/csi/<node id>.sock. It needs a Controller.
	CSI bool
	// CapacityBytes is what each node offers for replicas; zero means the
	// size of the filesystem holding Dir.
	CapacityBytes int64
	// ExtraArgs are appended to every node's command line.
	ExtraArgs []string
	// TLSDir is the certificate directory the nodes run with (--tls-dir),
	// where each gets its node and frontend certificates. Empty means
	// Dir/tls. A directory without a CA gets a new one.
	TLSDir string
	// Insecure runs the nodes with --insecure instead: no certificates
	// and no TLS, for clients that cannot present one (fio's nbd engine).
	Insecure bool
}

// tlsDir is the certificate directory of the processes under dir.
func tlsDir(dir string) string { return filepath.Join(dir, "tls") }

// ThreeZones is a node per zone on three loopback addresses.
var ThreeZones = []NodeSpec{
	{ID: "node-a", Zone: "zone-a", IP: "127.0.0.1"},
	{ID: "node-b", Zone: "zone-b", IP: "127.0.0.2"},
	{ID: "node-c", Zone: "zone-c", IP: "127.0.0.3"},
}

// Start launches one node agent per spec and waits until each answers on
// its API.
func Start(ctx context.Context, opts Options, specs []NodeSpec) (*Cluster, error) {
	if opts.TLSDir == "" {
		opts.TLSDir = tlsDir(opts.Dir)
	}
	var t *TLS
	if !opts.Insecure {
		var err error
		if t, err = OpenTLS(opts.TLSDir); err != nil {
			return nil, err
		}
	}
	c := &Cluster{TLS: t}
	for _, s := range specs {
		n, err := startNode(opts, t, s)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := n.waitReady(ctx); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func startNode(opts Options, t *TLS, s NodeSpec) (*Node, error) {
	ports, err := freePorts(s.IP, 3)
	if err != nil {
		return nil, err
	}
	creds := api.ClientCredentials(nil, nil) // plain, with Insecure
	if t != nil {
		if err := t.IssueNode(s.ID, s.IP); err != nil {
			return nil, err
		}
		if err := t.Issue(AdminPeer); err != nil {
			return nil, err
		}
		if creds, err = t.DialOption(ControllerPeer, certs.RoleNode); err != nil {
			return nil, err
		}
	}
	n := &Node{
		NodeSpec:        s,
		tls:             t,
		DataDir:         filepath.Join(opts.Dir, s.ID),
		ReplicationAddr: net.JoinHostPort(s.IP, strconv.Itoa(ports[0])),
		NBDAddress:      net.JoinHostPort(s.IP, strconv.Itoa(ports[1])),
		APIAddress:      net.JoinHostPort(s.IP, strconv.Itoa(ports[2])),
	}
	if opts.CSI {
		n.CSISocket = filepath.Join(opts.Dir, "csi", s.ID+".sock")
	}
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(opts.Dir, s.ID+".log")
	if n.proc, err = spawn("node "+s.ID, opts.Binary, n.args(opts, ports), logPath); err != nil {
		return nil, err
	}
	if n.Client, err = api.DialNode(n.APIAddress, creds); err != nil {
		n.kill()
		return nil, err
	}
	if n.CSISocket != "" {
		if n.CSIConn, err = DialUnix(n.CSISocket); err != nil {
			n.closeClients()
			n.kill()
			return nil, err
		}
	}
	klog.V(2).InfoS("Started node agent", "node", s.ID, "zone", s.Zone, "pid", n.PID())
	return n, nil
}

// args is the node's command line.
func (n *Node) args(opts Options, ports []int) []string {
	args := []string{"node",
		"--node-id", n.ID, "--zone", n.Zone, "--data-dir", n.DataDir,
		"--listen-address", n.IP,
		"--replication-port", strconv.Itoa(ports[0]),
		"--nbd-port", strconv.Itoa(ports[1]),
		"--api-port", strconv.Itoa(ports[2]),
	}
	if opts.Controller != "" {
		args = append(args, "--controller", opts.Controller)
	}
	if n.CSISocket != "" {
		args = append(args, "--csi-endpoint", "unix://"+n.CSISocket)
	}
	if opts.CapacityBytes > 0 {
		args = append(args, "--capacity-bytes", strconv.FormatInt(opts.CapacityBytes, 10))
	}
	// Last, so that it wins over a --tls-dir among ExtraArgs.
	if opts.Insecure {
		return append(append(args, opts.ExtraArgs...), "--insecure")
	}
	return append(append(args, opts.ExtraArgs...), "--tls-dir", opts.TLSDir)
}

// freePorts finds n ports free on ip. Another process could take one
// before the node binds it; the node then fails to start and says so.
func freePorts(ip string, n int) ([]int, error) {
	var ports []int
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("find a free port on %s: %w", ip, err)
		}
		lis = append(lis, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (n *Node) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := n.Client.ListVolumes(ctx, &apiv1.ListVolumesRequest{})
		if err == nil {
			return nil
		}
		select {
		case <-n.proc.done:
			return fmt.Errorf("node %s failed to start: %w", n.ID, n.proc.exitError())
		case <-ctx.Done():
			return fmt.Errorf("node %s not ready: %w", n.ID, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID returns the node process id.
func (n *Node) PID() int { return n.proc.pid() }

// LogPath returns the file holding the node's output.
func (n *Node) LogPath() string { return n.proc.logPath }

// Kill stops the node abruptly (SIGKILL) and waits for it to exit.
func (n *Node) Kill() { n.kill() }

func (n *Node) kill() { n.proc.kill() }

// Terminate stops the node with SIGTERM, so that it shuts its servers
// down in order, and kills it if it is not gone within grace.
func (n *Node) Terminate(grace time.Duration) error { return n.proc.terminate(grace) }

// Exited is closed once the node process has ended.
func (n *Node) Exited() <-chan struct{} { return n.proc.done }

// Stop ends every node process and releases the API clients.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.closeClients()
		n.kill()
	}
}

func (n *Node) closeClients() {
	if n.Client != nil {
		n.Client.Close()
	}
	if n.CSIConn != nil {
		n.CSIConn.Close()
	}
}

// Node returns the node with the given id, or nil.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}
