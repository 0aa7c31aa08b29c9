// Command trireme is the single binary of the Trireme CSI driver. This file
// only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/demo"
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
	case "node":
		return runNode(args[1:], stderr)
	case "volumes":
		return runVolumes(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
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
  node      run the node agent: replicas, replication, NBD exports, Node API
  volumes   print a node's volumes with replica health and sync progress
  demo      run three nodes in three zones and replicate real data across them
  version   print the version

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
	klog.InitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}

	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return a.Run(ctx, shutdownGrace)
}

func runVolumes(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("volumes", stderr)
	node := fs.String("node", "127.0.0.1:7601", "host:port of the node's API")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the node")
	if err := parse(fs, args); err != nil {
		return err
	}

	c, err := api.DialNode(*node)
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

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	dir := fs.String("dir", "", "directory for the nodes' data (default: a new temporary directory)")
	keep := fs.Bool("keep", false, "keep the data directory afterwards")
	klog.InitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "trireme-demo-"); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return demo.Run(ctx, demo.Options{Binary: self, Dir: *dir, Keep: *keep, Out: stdout})
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
