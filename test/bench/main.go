// Command bench runs fio's nbd engine against Trireme (one and three
// replicas) and against qemu-nbd serving a plain file on the same disk, in
// one run, and writes the results with the machine's description.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/localcluster"
)

func main() {
	var cfg config
	flag.StringVar(&cfg.trireme, "trireme", "bin/trireme", "trireme binary")
	flag.StringVar(&cfg.out, "out", "docs/benchmarks.md", "markdown report to write")
	flag.StringVar(&cfg.dir, "dir", "", "work directory (default: a new one under .cache/bench)")
	flag.Int64Var(&cfg.size, "size", 1<<30, "volume size in bytes")
	flag.DurationVar(&cfg.runtime, "runtime", 10*time.Second, "measured time per job")
	flag.DurationVar(&cfg.ramp, "ramp", 2*time.Second, "unmeasured warm-up per job")
	flag.BoolVar(&cfg.rebuildOnly, "rebuild-only", false, "fill the 3-replica volume and measure only the rebuild; print it, write no report")
	flag.StringVar(&cfg.only, "job", "", "run only the jobs whose name contains this, on every export; print them, write no report")
	klog.InitFlags(nil)
	flag.Parse()
	if err := run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	trireme, out, dir string
	size              int64
	runtime, ramp     time.Duration
	rebuildOnly       bool
	only              string // run only the jobs whose name contains it

	// measured 4 KiB pwrite rates of the disk, one thread
	holeRate, overwriteRate float64
}

func run(ctx context.Context, cfg config) error {
	if cfg.dir == "" {
		base := filepath.Join(".cache", "bench")
		if err := os.MkdirAll(base, 0o755); err != nil {
			return err
		}
		d, err := os.MkdirTemp(base, "run-")
		if err != nil {
			return err
		}
		cfg.dir = d
		defer os.RemoveAll(d)
	}
	abs, err := filepath.Abs(cfg.dir)
	if err != nil {
		return err
	}
	cfg.dir = abs

	hole, overwrite, err := diskRates(cfg.dir)
	if err != nil {
		return err
	}
	cfg.holeRate, cfg.overwriteRate = hole, overwrite
	fmt.Printf("disk: %.0f 4 KiB writes/s into holes, %.0f over allocated blocks\n", hole, overwrite)

	ref, err := startQemuNBD(cfg.dir, cfg.size)
	if err != nil {
		return err
	}
	defer ref.stop()

	// Without TLS: fio's nbd engine cannot present a certificate (see the
	// report).
	specs := append(slices.Clone(localcluster.ThreeZones), spareNode)
	cluster, err := localcluster.Start(ctx, localcluster.Options{Binary: cfg.trireme, Dir: cfg.dir, Insecure: true}, specs)
	if err != nil {
		return err
	}
	defer cluster.Stop()
	primary := cluster.Nodes[0]
	if _, err := cluster.CreateVolume(ctx, "bench-r1", cfg.size, "node-a"); err != nil {
		return err
	}
	r3, err := cluster.CreateVolume(ctx, "bench-r3", cfg.size, "node-a", "node-b", "node-c")
	if err != nil {
		return err
	}
	mem := memorySample{label: "after start, two empty volumes"}
	mem.read(primary.PID())

	targets := []target{
		{name: "qemu-nbd, plain file", uri: ref.uri},
		{name: "Trireme, 1 replica", uri: primary.NBDURI("bench-r1")},
		{name: "Trireme, 3 replicas", uri: primary.NBDURI("bench-r3")},
	}
	if cfg.rebuildOnly {
		targets = targets[2:] // the volume the rebuild copies
	}
	for _, t := range targets {
		fmt.Printf("filling %s (%d MiB)\n", t.name, cfg.size>>20)
		if _, err := fio(cfg, t, fillJob); err != nil {
			return err
		}
	}
	if cfg.rebuildOnly {
		rebuilds, err := measureRebuild(ctx, cfg, cluster, r3)
		if err != nil {
			return err
		}
		rebuild, disk := rebuildMedians(rebuilds)
		fmt.Printf("rebuild %.0f MiB/s, disk %.0f MiB/s (medians of %d): %.0f%%\n",
			rebuild/(1<<20), disk/(1<<20), len(rebuilds), 100*rebuild/disk)
		return nil
	}
	var results []result
	for _, j := range jobs {
		if !strings.Contains(j.name, cfg.only) {
			continue
		}
		for _, t := range targets {
			fmt.Printf("%-26s %-22s ", j.name, t.name)
			r, err := fio(cfg, t, j)
			if err != nil {
				return err
			}
			fmt.Printf("%9.0f IOPS %8.1f MiB/s  p99 %s\n", r.iops, r.mibps, r.p99)
			results = append(results, r)
		}
	}
	if cfg.only != "" {
		if len(results) == 0 {
			return fmt.Errorf("no job's name contains %q", cfg.only)
		}
		return nil
	}
	after := memorySample{label: "after every job"}
	after.read(primary.PID())
	rebuilds, err := measureRebuild(ctx, cfg, cluster, r3)
	if err != nil {
		return err
	}
	large, err := writeLargeVolume(ctx, cfg, cluster)
	if err != nil {
		return err
	}
	return writeReport(cfg, results, rebuilds, []memorySample{mem, after, large})
}

// largeSize is the volume used to show that memory does not follow volume
// size. Its files are sparse: only what fio writes takes disk space.
const largeSize = 64 << 30

func writeLargeVolume(ctx context.Context, cfg config, cluster *localcluster.Cluster) (memorySample, error) {
	if _, err := cluster.CreateVolume(ctx, "bench-large", largeSize, "node-a", "node-b", "node-c"); err != nil {
		return memorySample{}, err
	}
	t := target{name: "Trireme, 3 replicas, 64 GiB", uri: cluster.Nodes[0].NBDURI("bench-large")}
	big := cfg
	big.size = largeSize
	fmt.Printf("random writes over a %d GiB volume\n", largeSize>>30)
	if _, err := fio(big, t, job{name: "large", rw: "randwrite", bs: "4k", iodepth: 32, timed: true}); err != nil {
		return memorySample{}, err
	}
	m := memorySample{label: "after random writes across a third, 64 GiB volume"}
	m.read(cluster.Nodes[0].PID())
	return m, nil
}
