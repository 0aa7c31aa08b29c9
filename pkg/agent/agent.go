// Package agent wires a Trireme node agent together: the replicas kept
// under the data directory, the replication server other primaries write
// to, the primaries this node runs, the NBD server exporting them, and the
// gRPC Node service the controller drives it with.
//
// Layouts are kept in memory only. After a restart the node serves no
// volume as primary until the controller sends a layout again; a node
// must not resume serving on the strength of what it remembers, since the
// controller may have failed the volume over meanwhile.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/netlimit"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// Config says who the node is and where it keeps and serves data.
type Config struct {
	// NodeID names the node in layouts. Required.
	NodeID string
	// Zone is the node's availability zone, reported to operators.
	Zone string
	// DataDir holds one directory per replica under DataDir/volumes.
	DataDir string
	// ListenAddress is the IP address every server binds to.
	ListenAddress string
	// ReplicationPort, NBDPort and APIPort are the TCP ports of the
	// replication server, the NBD server and the Node service. Zero
	// picks a free port; Endpoints says which.
	ReplicationPort int
	NBDPort         int
	APIPort         int
	// ControllerAddress is host:port of the Controller service that
	// primaries report replica faults to. Empty means no reporter: a
	// faulted InSync replica blocks writes until SetLayout removes it.
	ControllerAddress string
	// AckTimeout is how long a replica may take to acknowledge before it
	// is reported faulted. Zero means the replication default.
	AckTimeout time.Duration
	// FenceTimeout is how long a primary's writes may wait on a fault
	// report the controller does not answer before it stops serving and
	// sends its clients to look for the current primary. Zero means the
	// replication default.
	FenceTimeout time.Duration
	// DegradedTimeout is how long a write waits for a volume to have its
	// minimum of in-sync replicas before it fails. Zero means the
	// replication default.
	DegradedTimeout time.Duration
	// Topology is the node's topology segment as reported to the
	// controller; the zone key is added from Zone when missing.
	Topology map[string]string
	// CapacityBytes is the space the node offers for replicas. Zero means
	// the size of the filesystem holding DataDir.
	CapacityBytes int64
	// HeartbeatInterval is how often the node heartbeats to the
	// controller's Registry service (at ControllerAddress). Zero means
	// one second.
	HeartbeatInterval time.Duration
	// Security holds the certificates of mutual TLS. Nil runs every
	// server and client over plain TCP: the insecure mode.
	Security *Security
}

// Endpoints are the addresses the agent's servers listen on.
type Endpoints struct {
	// Replication is where primaries of other nodes send writes.
	Replication string
	// NBD serves the volumes this node is primary of.
	NBD string
	// API serves the Node service.
	API string
}

// Agent is a running node agent. Create it with New, run it with Serve
// (or Run) and stop it with Shutdown.
type Agent struct {
	cfg      Config
	lock     *os.File // flock on the data dir, held while running
	reporter replication.Reporter
	ctrl     *api.ControllerClient // nil without a controller
	registry *api.RegistryClient   // nil without a controller
	reg      *registrar            // nil without a controller
	csi      *csiService           // nil unless StartCSI ran
	capacity int64                 // bytes offered for replicas

	replLis, nbdLis, apiLis net.Listener
	repl                    *replication.Server
	nbd                     *nbd.Server
	grpc                    *grpc.Server

	mu        sync.Mutex // guards the maps and closed
	replicas  map[string]*blockstore.Replica
	layouts   map[string]replication.Layout
	primaries map[string]*replication.Primary
	inflight  map[string]struct{}
	closed    bool
	ops       sync.WaitGroup // operations admitted by begin

	stopping     atomic.Bool
	regOnce      sync.Once   // starts the registrar, or keeps it from starting
	regStarted   atomic.Bool // the registrar runs
	shutdownOnce sync.Once
	shutdownErr  error
}

// New checks cfg, takes the data directory, re-opens the replicas found
// there and binds the servers' listeners. Nothing is served until Serve.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:       cfg,
		layouts:   map[string]replication.Layout{},
		primaries: map[string]*replication.Primary{},
		inflight:  map[string]struct{}{},
	}
	if err := a.open(); err != nil {
		a.release()
		return nil, err
	}
	return a, nil
}

func (c Config) validate() error {
	switch {
	case c.NodeID == "":
		return fmt.Errorf("%w: node id is required", ErrInvalidConfig)
	case c.DataDir == "":
		return fmt.Errorf("%w: data dir is required", ErrInvalidConfig)
	case net.ParseIP(c.ListenAddress) == nil:
		return fmt.Errorf("%w: listen address %q is not an IP address", ErrInvalidConfig, c.ListenAddress)
	case c.AckTimeout < 0:
		return fmt.Errorf("%w: negative ack timeout %s", ErrInvalidConfig, c.AckTimeout)
	case c.FenceTimeout < 0 || c.DegradedTimeout < 0:
		return fmt.Errorf("%w: negative fence or degraded-write timeout", ErrInvalidConfig)
	case c.CapacityBytes < 0:
		return fmt.Errorf("%w: negative capacity %d", ErrInvalidConfig, c.CapacityBytes)
	case c.HeartbeatInterval < 0:
		return fmt.Errorf("%w: negative heartbeat interval %s", ErrInvalidConfig, c.HeartbeatInterval)
	}
	for _, p := range []int{c.ReplicationPort, c.NBDPort, c.APIPort} {
		if p < 0 || p > 65535 {
			return fmt.Errorf("%w: port %d out of range", ErrInvalidConfig, p)
		}
	}
	return nil
}

// open does the fallible part of New; release undoes what it did.
func (a *Agent) open() error {
	var err error
	if a.lock, err = lockDataDir(a.cfg.DataDir); err != nil {
		return err
	}
	if a.replicas, err = openReplicas(a.volumesDir()); err != nil {
		return err
	}
	if a.capacity = a.cfg.CapacityBytes; a.capacity == 0 {
		if a.capacity, err = dataDirCapacity(a.cfg.DataDir); err != nil {
			return err
		}
	}
	if err := a.listen(); err != nil {
		return err
	}
	if err := a.dialController(); err != nil {
		return err
	}
	a.repl = replication.NewServer(localReplicas{a}, a.replicationOptions())
	a.nbd = nbd.NewServer(primaryExports{a}, a.nbdOptions())
	a.grpc = grpc.NewServer(api.ServerOptions(a.nodeBundle(), certs.AllowRoles(certs.RoleController, certs.RoleAdmin), nodeAPIRules())...)
	apiv1.RegisterNodeServer(a.grpc, &nodeServer{a: a})
	return nil
}

func (a *Agent) listen() error {
	ports := []int{a.cfg.ReplicationPort, a.cfg.NBDPort, a.cfg.APIPort}
	targets := []*net.Listener{&a.replLis, &a.nbdLis, &a.apiLis}
	for i, port := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(a.cfg.ListenAddress, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		*targets[i] = l
	}
	a.apiLis = netlimit.NewListener(a.apiLis, api.MaxConnsPerIP, "node API")
	if b := a.nodeBundle(); b != nil {
		// Only node agents write to replicas: anyone else is refused in
		// the handshake, before a frame is read.
		a.replLis = tls.NewListener(a.replLis, b.ServerConfig(certs.AllowRoles(certs.RoleNode)))
	}
	return nil
}

func (a *Agent) dialController() error {
	if a.cfg.ControllerAddress == "" {
		klog.Warningf("No controller address: a faulted replica of a volume this node serves "+
			"blocks its writes until a new layout arrives through SetLayout (node %s)", a.cfg.NodeID)
		return nil
	}
	creds := api.ClientCredentials(a.nodeBundle(), certs.AllowPeer(certs.Peer{Role: certs.RoleController}))
	c, err := api.DialController(a.cfg.ControllerAddress, creds)
	if err != nil {
		return err
	}
	a.ctrl = c
	a.reporter = &controllerReporter{client: c, timeout: reportTimeout}
	if a.registry, err = api.DialRegistry(a.cfg.ControllerAddress, creds); err != nil {
		return err
	}
	a.reg = newRegistrar(a, a.registry)
	return nil
}

// Endpoints returns the addresses the servers listen on.
func (a *Agent) Endpoints() Endpoints {
	return Endpoints{
		Replication: a.replLis.Addr().String(),
		NBD:         a.nbdLis.Addr().String(),
		API:         a.apiLis.Addr().String(),
	}
}

// Serve runs the replication, NBD and API servers. It returns nil once
// Shutdown has stopped them all. If a server fails first, Serve returns its
// error at once, and the caller must call Shutdown.
func (a *Agent) Serve() error {
	klog.InfoS("Node agent serving", "node", a.cfg.NodeID, "zone", a.cfg.Zone, "dataDir", a.cfg.DataDir,
		"replication", a.replLis.Addr(), "nbd", a.nbdLis.Addr(), "api", a.apiLis.Addr(),
		"controller", a.cfg.ControllerAddress, "volumes", len(a.volumeIDs()))
	a.regOnce.Do(a.startRegistrar)
	errc := make(chan error, 3)
	go func() { errc <- wrapServe("replication", a.repl.Serve(a.replLis)) }()
	go func() { errc <- wrapServe("nbd", ignoreClosed(a.nbd.Serve(a.nbdLis))) }()
	go func() { errc <- wrapServe("api", a.grpc.Serve(a.apiLis)) }()
	for range 3 {
		if err := <-errc; err != nil && !a.stopping.Load() {
			return err
		}
	}
	return nil
}

// startRegistrar runs the registration and heartbeat loop, if the agent
// has a controller.
func (a *Agent) startRegistrar() {
	if a.reg == nil {
		return
	}
	a.regStarted.Store(true)
	go a.reg.run()
}

func ignoreClosed(err error) error {
	if errors.Is(err, nbd.ErrServerClosed) {
		return nil
	}
	return err
}

func wrapServe(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s server: %w", name, err)
	}
	return nil
}

// Run serves until ctx is done or a server fails, then shuts down,
// giving in-flight API calls up to grace to finish.
func (a *Agent) Run(ctx context.Context, grace time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- a.Serve() }()
	select {
	case <-ctx.Done():
	case err := <-served:
		return errors.Join(err, a.shutdownWithin(grace))
	}
	err := a.shutdownWithin(grace)
	return errors.Join(<-served, err)
}

func (a *Agent) shutdownWithin(grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	return a.Shutdown(ctx)
}

// Shutdown stops the agent, in order: the API (waiting for in-flight calls
// until ctx is done), then NBD clients, the primaries, the replication
// server, the replicas and the data directory lock. It is safe to call
// more than once.
func (a *Agent) Shutdown(ctx context.Context) error {
	a.shutdownOnce.Do(func() { a.shutdownErr = a.shutdown(ctx) })
	return a.shutdownErr
}

func (a *Agent) shutdown(ctx context.Context) error {
	klog.InfoS("Node agent shutting down", "node", a.cfg.NodeID)
	a.stopping.Store(true)
	a.regOnce.Do(func() {}) // a Serve that has not begun yet starts none
	if a.regStarted.Load() {
		a.reg.close()
	}
	a.stopCSI(ctx)
	stopGRPC(ctx, a.grpc)

	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.ops.Wait()

	err := a.nbd.Close()
	for id, p := range a.takePrimaries() {
		epoch := p.Layout().Epoch
		p.Close()
		klog.InfoS("Stopped serving volume", "volume", id, "node", a.cfg.NodeID, "epoch", epoch)
	}
	a.repl.Close()
	a.release()
	klog.InfoS("Node agent stopped", "node", a.cfg.NodeID)
	return err
}

// stopGRPC lets in-flight calls finish until ctx is done, then cancels
// them.
func stopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() {
		s.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}

// release closes the replicas, listeners, controller connection and data
// dir lock; it is also New's cleanup and copes with a partial open.
func (a *Agent) release() {
	for _, r := range a.replicas {
		r.Close()
	}
	for _, l := range []net.Listener{a.replLis, a.nbdLis, a.apiLis} {
		if l != nil {
			l.Close()
		}
	}
	if a.ctrl != nil {
		a.ctrl.Close()
	}
	if a.registry != nil {
		a.registry.Close()
	}
	if a.lock != nil {
		a.lock.Close()
	}
}

func (a *Agent) takePrimaries() map[string]*replication.Primary {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.primaries
	a.primaries = map[string]*replication.Primary{}
	return ps
}

func (a *Agent) volumesDir() string { return filepath.Join(a.cfg.DataDir, "volumes") }

// volumeDir is where the replica of id lives. id must have passed
// api.ValidateVolumeID, which keeps it inside volumesDir.
func (a *Agent) volumeDir(id string) string { return filepath.Join(a.volumesDir(), id) }

func (a *Agent) primaryOptions() replication.PrimaryOptions {
	return replication.PrimaryOptions{
		NodeID:          a.cfg.NodeID,
		Reporter:        a.reporter,
		AckTimeout:      a.cfg.AckTimeout,
		FenceTimeout:    a.cfg.FenceTimeout,
		DegradedTimeout: a.cfg.DegradedTimeout,
		Dialer:          a.replicaDialer(),
	}
}
