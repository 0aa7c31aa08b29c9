// Command trireme is the single binary of the Trireme CSI driver. This file
// only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/apiserver"
	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/netlimit"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "devel"

// shutdownGrace is how long in-flight API calls may take at shutdown.
const shutdownGrace = 10 * time.Second

// errUsage means the command line was wrong; the usage has been printed.
var errUsage = errors.New("usage")

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	klog.Flush()
	switch {
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "trireme:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "controller":
		return runController(args[1:], stderr)
	case "node":
		return runNode(args[1:], stderr)
	case "volumes":
		return runVolumes(args[1:], stdout, stderr)
	case "certs":
		return runCerts(args[1:], stdout, stderr)
	case "local-cluster", "demo":
		return runLocalCluster(args[0], args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "trireme", version)
		return nil
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return nil
	}
	fmt.Fprintf(stderr, "trireme: unknown command %q\n", args[0])
	usage(stderr)
	return errUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: trireme <command> [flags]

Commands:
  controller     run the controller: CSI Identity and Controller, node registry
  node           run the node agent: replicas, replication, NBD exports, Node API
  volumes        print a node's volumes with replica health and sync progress
  certs          create the cluster CA and issue component certificates
  local-cluster  run a controller and six nodes in three zones on this machine and
                 move a volume of real files across zones through CSI (needs root)
  demo           the same as local-cluster
  version        print the version

Run "trireme <command> -h" for the flags of a command.
`)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("trireme "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func runNode(args []string, stderr io.Writer) error {
	fs := newFlagSet("node", stderr)
	var cfg agent.Config
	fs.StringVar(&cfg.NodeID, "node-id", "", "this node's id in volume layouts (required)")
	fs.StringVar(&cfg.Zone, "zone", "", "this node's availability zone")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory holding the replicas (required)")
	fs.StringVar(&cfg.ListenAddress, "listen-address", "127.0.0.1", "IP address the servers listen on")
	fs.IntVar(&cfg.ReplicationPort, "replication-port", 7600, "TCP port of the replication server")
	fs.IntVar(&cfg.NBDPort, "nbd-port", 10809, "TCP port of the NBD server")
	fs.IntVar(&cfg.APIPort, "api-port", 7601, "TCP port of the Node API (gRPC)")
	fs.StringVar(&cfg.ControllerAddress, "controller", "", "host:port of the controller's API, for replica fault reports")
	fs.DurationVar(&cfg.AckTimeout, "ack-timeout", 2*time.Second, "how long a replica may take to acknowledge before it is reported faulted")
	fs.DurationVar(&cfg.FenceTimeout, "fence-timeout", replication.DefaultFenceTimeout, "how long writes may wait on an unanswered fault report before this node stops serving the volume as primary")
	fs.DurationVar(&cfg.DegradedTimeout, "degraded-write-timeout", replication.DefaultDegradedTimeout, "how long a write waits for the volume's minimum of in-sync replicas before it fails")
	fs.Int64Var(&cfg.CapacityBytes, "capacity-bytes", 0, "bytes offered for replicas (0: the size of the data dir's filesystem)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 500*time.Millisecond, "how often to heartbeat to the controller")
	csiCfg := agent.CSIConfig{Version: version}
	fs.StringVar(&csiCfg.Endpoint, "csi-endpoint", "", "CSI Node endpoint, unix:///path/csi.sock (empty: no CSI service)")
	fs.Int64Var(&csiCfg.MaxVolumes, "max-volumes", 0, "most volumes this node stages (0: no limit)")
	nk := addNodeKubeFlags(fs)
	sec := addSecurityFlags(fs)
	lf := addListenFlags(fs)
	klog.InitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := errors.Join(sec.check(), lf.check(cfg.ListenAddress), sec.checkCSIEndpoint("csi-endpoint", csiCfg.Endpoint)); err != nil {
		return err
	}
	stopKube, err := nk.apply(&cfg)
	if err != nil {
		return err
	}
	defer stopKube()
	if cfg.Security, err = nodeSecurity(sec, cfg.NodeID, csiCfg.Endpoint != ""); err != nil {
		return err
	}

	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if csiCfg.Endpoint != "" {
		if err := a.StartCSI(ctx, csiCfg); err != nil {
			return errors.Join(err, a.Shutdown(ctx))
		}
	}
	return a.Run(ctx, shutdownGrace)
}

func runController(args []string, stderr io.Writer) error {
	fs := newFlagSet("controller", stderr)
	endpoint := fs.String("endpoint", "unix:///csi/csi.sock", "CSI endpoint: unix:///path (tcp://host:port only with --insecure: CSI authenticates nobody)")
	db := fs.String("db", "/var/lib/trireme/controller.db", "embedded store file")
	listen := fs.String("listen-address", "127.0.0.1", "IP address of the controller's internal API")
	apiPort := fs.Int("api-port", 7700, "TCP port of the internal API (node registry, replica reports)")
	healthPort := fs.Int("health-port", 0, "TCP port of an HTTP /healthz that answers while the process runs, leading or standing by (0: none)")
	var opts controller.Options
	fs.DurationVar(&opts.HeartbeatTimeout, "heartbeat-timeout", controller.DefaultHeartbeatTimeout, "how old a node's heartbeat may be for it to count as live; a primary silent this long is failed over")
	fs.DurationVar(&opts.RepairInterval, "repair-interval", controller.DefaultRepairInterval, "how often every volume is checked for failover, lost replicas and placement")
	fs.DurationVar(&opts.ResumeWindow, "resume-window", controller.DefaultResumeWindow, "how long a lost replica may stay away and still come back by catching up on what it missed")
	kf := addControllerKubeFlags(fs)
	sec := addSecurityFlags(fs)
	lf := addListenFlags(fs)
	klog.InitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := errors.Join(sec.check(), lf.check(*listen)); err != nil {
		return err
	}
	if _, _, err := csi.ParseEndpoint(*endpoint); err != nil {
		return err
	}
	if err := sec.checkCSIEndpoint("endpoint", *endpoint); err != nil {
		return err
	}
	bundle, err := sec.load("controller", certs.Peer{Role: certs.RoleController})
	if err != nil {
		return err
	}

	st, err := kf.openStore(*db, &opts)
	if err != nil {
		return err
	}
	defer st.Close()
	defer closeEvents(opts)
	opts.Store = st
	opts.DialNode = nodeDialer(bundle)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *healthPort != 0 {
		lis, err := net.Listen("tcp", net.JoinHostPort(*listen, strconv.Itoa(*healthPort)))
		if err != nil {
			return fmt.Errorf("listen for health checks: %w", err)
		}
		serveHealth(ctx, lis)
	}
	return kf.run(ctx, *listen, *apiPort, func(ctx context.Context) error {
		// Made once leading: nodes count as dead only a heartbeat
		// timeout after this replica could first hear from them.
		ctrl := controller.New(opts)
		defer ctrl.Close()
		return serveController(ctx, ctrl, bundle, *endpoint, net.JoinHostPort(*listen, strconv.Itoa(*apiPort)))
	})
}

// serveHealth answers GET /healthz with 200 until ctx ends. It says only
// that the process runs: a standby controller, which opens no CSI socket
// until it leads, is as healthy as the leader.
func serveHealth(ctx context.Context, lis net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(lis)
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
}

// serveController serves the CSI services on endpoint and the internal
// API on apiAddr until ctx ends.
func serveController(ctx context.Context, ctrl *controller.Controller, bundle *certs.Bundle, endpoint, apiAddr string) error {
	csiLis, err := csi.Listen(endpoint)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", apiAddr)
	if err != nil {
		csiLis.Close()
		return fmt.Errorf("listen: %w", err)
	}
	apiLis := netlimit.NewListener(lis, api.MaxConnsPerIP, "controller API")
	csiSrv := csi.NewGRPCServer()
	csipb.RegisterIdentityServer(csiSrv, &csi.IdentityServer{Version: version, Controller: true})
	csipb.RegisterControllerServer(csiSrv, csi.NewControllerServer(ctrl))
	edge := apiserver.New(ctrl)
	apiSrv := grpc.NewServer(api.ServerOptions(bundle, certs.AllowRoles(certs.RoleNode, certs.RoleAdmin), edge.Rules())...)
	edge.Register(apiSrv)

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	klog.InfoS("Controller serving", "endpoint", endpoint, "api", apiLis.Addr())
	return serveAll(ctx, stop, func(ctx context.Context) error { return csi.Serve(ctx, csiSrv, csiLis) },
		func(ctx context.Context) error { return csi.Serve(ctx, apiSrv, apiLis) },
		func(ctx context.Context) error { ctrl.Run(ctx); return nil })
}

// serveAll runs every serve function until ctx is done or one fails; a
// failure stops the others.
func serveAll(ctx context.Context, stop func(), serves ...func(context.Context) error) error {
	errc := make(chan error, len(serves))
	for _, serve := range serves {
		go func() { errc <- serve(ctx) }()
	}
	var errs []error
	for range serves {
		err := <-errc
		stop()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func runVolumes(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("volumes", stderr)
	node := fs.String("node", "127.0.0.1:7601", "host:port of the node's API")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the node")
	sec := addSecurityFlags(fs)
	admin := fs.String("admin", "admin", "with --tls-dir: the operator certificate to present, admin-NAME in the directory (trireme certs --admin NAME)")
	if err := parse(fs, args); err != nil {
		return err
	}
	bundle, err := sec.load("volumes", certs.Peer{Role: certs.RoleAdmin, Name: *admin})
	if err != nil {
		return err
	}

	c, err := api.DialNode(*node, api.ClientCredentials(bundle, certs.AllowRoles(certs.RoleNode)))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	list, err := c.ListVolumes(ctx, &apiv1.ListVolumesRequest{})
	if err != nil {
		return fmt.Errorf("list volumes on %s: %w", *node, err)
	}
	return api.WriteVolumeTable(stdout, list)
}

// parse parses flags and refuses positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}
