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
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
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
	Client          *api.NodeClient

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error
	stop    sync.Once
}

// Cluster is a set of node agent processes.
type Cluster struct {
	Nodes []*Node
}

// Options tune the node processes.
type Options struct {
	// Binary is the trireme executable.
	Binary string
	// Dir holds each node's data directory and log.
	Dir string
	// ExtraArgs are appended to every node's command line.
	ExtraArgs []string
}

// ThreeZones is a node per zone on three loopback addresses.
var ThreeZones = []NodeSpec{
	{ID: "node-a", Zone: "zone-a", IP: "127.0.0.1"},
	{ID: "node-b", Zone: "zone-b", IP: "127.0.0.2"},
	{ID: "node-c", Zone: "zone-c", IP: "127.0.0.3"},
}

// Start launches one node agent per spec and waits until each answers on
// its API.
func Start(ctx context.Context, opts Options, specs []NodeSpec) (*Cluster, error) {
	c := &Cluster{}
	for _, s := range specs {
		n, err := startNode(opts, s)
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

func startNode(opts Options, s NodeSpec) (*Node, error) {
	ports, err := freePorts(s.IP, 3)
	if err != nil {
		return nil, err
	}
	n := &Node{
		NodeSpec:        s,
		DataDir:         filepath.Join(opts.Dir, s.ID),
		ReplicationAddr: net.JoinHostPort(s.IP, strconv.Itoa(ports[0])),
		NBDAddress:      net.JoinHostPort(s.IP, strconv.Itoa(ports[1])),
		APIAddress:      net.JoinHostPort(s.IP, strconv.Itoa(ports[2])),
		done:            make(chan struct{}),
	}
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(opts.Dir, s.ID+".log"))
	if err != nil {
		return nil, err
	}
	args := []string{"node",
		"--node-id", s.ID, "--zone", s.Zone, "--data-dir", n.DataDir,
		"--listen-address", s.IP,
		"--replication-port", strconv.Itoa(ports[0]),
		"--nbd-port", strconv.Itoa(ports[1]),
		"--api-port", strconv.Itoa(ports[2]),
	}
	n.cmd = exec.Command(opts.Binary, append(args, opts.ExtraArgs...)...)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start node %s: %w", s.ID, err)
	}
	go func() {
		n.exitErr = n.cmd.Wait()
		logf.Close()
		close(n.done)
	}()
	if n.Client, err = api.DialNode(n.APIAddress); err != nil {
		n.kill()
		return nil, err
	}
	klog.V(2).InfoS("Started node agent", "node", s.ID, "zone", s.Zone, "pid", n.cmd.Process.Pid)
	return n, nil
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
		case <-n.done:
			return fmt.Errorf("node %s exited during start: %v (see %s.log)", n.ID, n.exitErr, n.ID)
		case <-ctx.Done():
			return fmt.Errorf("node %s not ready: %w", n.ID, errors.Join(ctx.Err(), err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// PID returns the node process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Kill stops the node abruptly (SIGKILL) and waits for it to exit.
func (n *Node) Kill() { n.kill() }

func (n *Node) kill() {
	n.stop.Do(func() {
		n.cmd.Process.Kill()
		<-n.done
	})
}

// Exited is closed once the node process has ended.
func (n *Node) Exited() <-chan struct{} { return n.done }

// Stop ends every node process and releases the API clients.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if n.Client != nil {
			n.Client.Close()
		}
		n.kill()
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
