package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/demo"
)

// runLocalCluster runs the whole system on this machine and plays the
// demo on it (package demo).
func runLocalCluster(name string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet(name, stderr)
	var o demo.Options
	fs.StringVar(&o.Dir, "dir", "", "work directory: data, sockets, logs and mounts; must be empty (default: a new temporary directory)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the work directory (logs, controller store) afterwards")
	fs.StringVar(&o.Source, "source", "", "directory tree to write onto the volume (default: $(go env GOROOT)/src)")
	fs.IntVar(&o.Nodes, "nodes", demo.DefaultNodes, "node agents to start, on 127.0.0.11 onwards")
	fs.IntVar(&o.Zones, "zones", demo.DefaultZones, "zones to spread the nodes over (at least 3)")
	fs.StringVar(&o.FSType, "fs-type", demo.DefaultFSType, "filesystem of the volume: ext4 or xfs")
	klog.InitFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	var err error
	if o.Binary, err = os.Executable(); err != nil {
		return err
	}
	o.Out = stdout
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return demo.Run(ctx, o)
}
