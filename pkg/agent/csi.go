package agent

import (
	"context"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/csi"
)

// CSIConfig configures the CSI Node service a node agent serves beside
// its data plane.
type CSIConfig struct {
	// Endpoint is where the kubelet reaches the service:
	// unix:///path/csi.sock (or tcp://host:port for tests).
	Endpoint string
	// Version is reported by the Identity service.
	Version string
	// MaxVolumes is the most volumes the node stages; zero reports no
	// limit.
	MaxVolumes int64
	// StateDir records staged volumes; empty means DataDir/csi/staged.
	StateDir string
	// MountDir holds the frontend's FUSE mounts; empty means
	// DataDir/csi/attach.
	MountDir string
	// IOTimeout bounds how long one I/O waits for a volume's primary,
	// across reconnections, before it fails; zero means the frontend's
	// default.
	IOTimeout time.Duration
}

// reattachInterval spaces the attempts to attach again the volumes a
// previous run left staged.
const reattachInterval = 5 * time.Second

// csiService is a running CSI Node service.
type csiService struct {
	server       *grpc.Server
	lis          net.Listener
	done         chan struct{}
	stopReattach context.CancelFunc
}

// StartCSI starts the CSI Identity and Node services on cfg.Endpoint. It
// needs a controller (Config.ControllerAddress) to locate volumes, and
// must be called after New and before Serve: it adds the driver's zone
// key to the topology the node registers with, so that what NodeGetInfo
// reports matches what the controller places by. Before serving, it
// recovers the volumes a previous run left staged, and attaches them
// again in the background (a volume may have this node as primary, which
// serves only once Serve runs). Shutdown stops the service first, before
// the data plane.
func (a *Agent) StartCSI(ctx context.Context, cfg CSIConfig) error {
	if a.registry == nil {
		return fmt.Errorf("%w: the CSI Node service needs a controller address", ErrInvalidConfig)
	}
	ftls, err := a.frontendTLS()
	if err != nil {
		return err
	}
	a.addDriverTopology()
	ncfg := a.nodeConfig(cfg)
	ncfg.FrontendTLS = ftls
	ns, err := csi.NewNodeServer(ncfg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := ns.Recover(); err != nil {
		return err
	}
	lis, err := csi.Listen(cfg.Endpoint)
	if err != nil {
		return err
	}
	s := csi.NewNodeGRPCServer()
	// The plugin's capabilities are the same at every endpoint: the
	// controller serves the Controller service for the whole driver.
	csipb.RegisterIdentityServer(s, &csi.IdentityServer{Version: cfg.Version, Controller: true})
	csipb.RegisterNodeServer(s, ns)
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.csi = &csiService{server: s, lis: lis, done: make(chan struct{}), stopReattach: cancel}
	go a.csi.serve(a.cfg.NodeID)
	go ns.KeepReattaching(rctx, reattachInterval)
	klog.InfoS("CSI Node service serving", "node", a.cfg.NodeID, "endpoint", cfg.Endpoint)
	return nil
}

func (c *csiService) serve(node string) {
	defer close(c.done)
	if err := c.server.Serve(c.lis); err != nil {
		klog.ErrorS(err, "CSI Node service stopped", "node", node)
	}
}

// addDriverTopology adds csi.DriverZoneKey, set to the node's zone, to
// the topology the node registers with, unless it is configured.
func (a *Agent) addDriverTopology() {
	if a.cfg.Zone == "" {
		return
	}
	if _, ok := a.cfg.Topology[csi.DriverZoneKey]; ok {
		return
	}
	t := maps.Clone(a.cfg.Topology)
	if t == nil {
		t = map[string]string{}
	}
	t[csi.DriverZoneKey] = a.cfg.Zone
	a.cfg.Topology = t
}

func (a *Agent) nodeConfig(cfg CSIConfig) csi.NodeConfig {
	base := filepath.Join(a.cfg.DataDir, "csi")
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(base, "staged")
	}
	if cfg.MountDir == "" {
		cfg.MountDir = filepath.Join(base, "attach")
	}
	return csi.NodeConfig{
		NodeID:     a.cfg.NodeID,
		Topology:   a.topology(),
		MaxVolumes: cfg.MaxVolumes,
		StateDir:   cfg.StateDir,
		MountDir:   cfg.MountDir,
		Locator:    &registryLocator{client: a.registry, timeout: locateTimeout},
		IOTimeout:  cfg.IOTimeout,
	}
}

// stopCSI stops the CSI service, letting calls in flight finish until ctx
// is done. Staged volumes stay attached for as long as the process
// lives.
func (a *Agent) stopCSI(ctx context.Context) {
	if a.csi == nil {
		return
	}
	a.csi.stopReattach()
	stopGRPC(ctx, a.csi.server)
	<-a.csi.done
}

// CSIAddress returns the address the CSI service listens on, or "".
func (a *Agent) CSIAddress() string {
	if a.csi == nil {
		return ""
	}
	return a.csi.lis.Addr().String()
}
