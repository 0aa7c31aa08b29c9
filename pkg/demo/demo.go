// Package demo is Trireme's main job on one machine. It starts a
// controller and node agents in three zones (package localcluster),
// creates a 3-replica volume through the CSI Controller service as the
// external-provisioner would, stages and publishes it on a node as the
// kubelet would, and unpacks a real source tree onto it. Then it kills
// every node of the primary's zone while a pod writes, follows the
// failover and the replacement replica's resync, and measures the time
// from the kill to the first write the new primary acknowledges. It moves
// the volume to a node in another surviving zone and verifies every file
// there, checks that the replicas hold identical bytes, and removes
// everything it created.
package demo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// Defaults of Options.
const (
	DefaultNodes  = 6
	DefaultZones  = 3
	DefaultFSType = "ext4"
)

// cleanupTimeout bounds the whole teardown, Ctrl-C or not.
const cleanupTimeout = 2 * time.Minute

// Options configure the demo.
type Options struct {
	// Binary is the trireme executable the processes run.
	Binary string
	// Dir holds every process's data, sockets and logs, and the mounts;
	// it must be empty or absent, and empty means a new temporary
	// directory. It is removed at the end unless Keep.
	Dir  string
	Keep bool
	// Source is the directory tree unpacked onto the volume; empty means
	// the Go toolchain's source tree.
	Source string
	// Nodes and Zones size the cluster; zero means DefaultNodes and
	// DefaultZones. The demo needs three zones or more.
	Nodes, Zones int
	// FSType is the filesystem of the volume; empty means DefaultFSType.
	FSType string
	// Out receives the narration.
	Out io.Writer
}

func (o Options) withDefaults() (Options, error) {
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Zones == 0 {
		o.Zones = DefaultZones
	}
	if o.FSType == "" {
		o.FSType = DefaultFSType
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	var err error
	if o.Source == "" {
		if o.Source, err = defaultSource(); err != nil {
			return o, err
		}
	}
	switch {
	case o.Binary == "":
		return o, errors.New("demo: the trireme binary is required")
	case o.Zones < 3:
		return o, fmt.Errorf("demo: %d zones: the demo moves a volume across three zones", o.Zones)
	}
	return o, nil
}

// run is one play of the demo.
type run struct {
	o     Options
	start time.Time
	td    teardown

	sys    *localcluster.System
	pvName string
	vol    *csipb.Volume
	layout *apiv1.Layout

	want       manifest // the source tree, by path below it
	src        tree
	writer     *localcluster.Node
	mount      *podMount // the volume on the writer's node
	podWrites  manifest  // what the pod wrote during the failover, by path below the mount
	failover   *failover
	reader     *localcluster.Node
	identical  int      // replicas found identical in the end
	spread     []string // the zones holding them
	unpackTime time.Duration
	verifyTime time.Duration
}

// Run plays the demo, narrating to o.Out, and returns an error if any step
// or check fails. Whatever happens, including ctx being cancelled, it
// removes what it created before it returns.
func Run(ctx context.Context, o Options) (err error) {
	if o, err = o.withDefaults(); err != nil {
		return err
	}
	r := &run{o: o, start: time.Now(), pvName: newPVName()}
	defer func() { err = errors.Join(err, r.finish(ctx, err)) }()
	for _, step := range []func(context.Context) error{
		r.prepare, r.startCluster, r.createVolume, r.writeTree, r.loseZone, r.moveAndVerify, r.compareReplicas,
	} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// newPVName makes a name like those the external-provisioner gives
// volumes: "pvc-" and the claim's UID.
func newPVName() string {
	b := make([]byte, 16)
	rand.Read(b)
	return fmt.Sprintf("pvc-%x-%x-%x-%x-%x", b[:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (r *run) say(format string, args ...any) { fmt.Fprintf(r.o.Out, format+"\n", args...) }

// timed runs fn, then prints label, how long fn took, and the detail fn
// returns.
func (r *run) timed(label string, fn func() (string, error)) error {
	start := time.Now()
	detail, err := fn()
	d := seconds(time.Since(start))
	if err != nil {
		r.say("   %-26s %7s  FAILED", label, d)
		return err
	}
	r.say("   %-26s %7s  %s", label, d, detail)
	return nil
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

// prepare makes the work directory and reads the source tree.
func (r *run) prepare(ctx context.Context) error {
	if err := r.makeWorkDir(); err != nil {
		return err
	}
	if !r.o.Keep {
		r.td.push("Remove the work directory", func(context.Context) error { return removeDir(r.o.Dir) })
	}
	r.say("Trireme on one machine: a controller and %d node agents in %d zones.", r.o.Nodes, r.o.Zones)
	r.say("Work directory %s (the processes' logs are there).", r.o.Dir)
	var err error
	if r.want, r.src, err = hashTree(ctx, r.o.Source); err != nil {
		return fmt.Errorf("read the source tree: %w", err)
	}
	r.say("Workload: %s, %d files, %s.", r.o.Source, r.src.files, mib(r.src.bytes))
	return nil
}

// makeWorkDir creates the work directory: a new temporary one unless
// Options name it.
func (r *run) makeWorkDir() error {
	if r.o.Dir != "" {
		return makeEmptyDir(r.o.Dir)
	}
	dir, err := os.MkdirTemp("", "trireme-local-cluster-")
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	r.o.Dir = dir
	return nil
}

// makeEmptyDir creates dir, or checks that it is empty: the demo removes
// it at the end, and must not remove anything it did not create.
func makeEmptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("work directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("work directory %s is not empty", dir)
	}
	return nil
}

// removeDir removes the work directory, unless something is still
// mounted or attached below it: removing files through a live mount
// would reach into a filesystem that is not the demo's to delete. A
// process left behind that still names the directory, such as a node
// agent's umount hung on a volume's I/O, is reported: the kernel holds
// the volume's loop device for as long as it hangs.
func removeDir(dir string) error {
	mounts, loops, err := localcluster.Leftovers(dir)
	if err != nil {
		return err
	}
	if len(mounts)+len(loops) > 0 {
		return fmt.Errorf("kept %s: mounts %q and loop devices %q remain", dir, mounts, loops)
	}
	err = os.RemoveAll(dir)
	if procs := localcluster.Stragglers(dir); len(procs) > 0 {
		err = errors.Join(err, fmt.Errorf("processes left behind still name %s: %q", dir, procs))
	}
	return err
}

// finish tears down what is left and prints the outcome.
func (r *run) finish(ctx context.Context, runErr error) error {
	interrupted := ctx.Err() != nil
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	switch {
	case runErr != nil && interrupted:
		r.say("\nInterrupted (%v)", runErr)
		r.say("\nCleaning up after the interruption")
	case runErr != nil:
		r.say("\nFAILED: %v", runErr)
		r.say("\nCleaning up after the failure")
	default:
		r.say("\n[7/7] Cleaning up everything the demo created")
	}
	err := r.td.unwind(ctx, r.say)
	if runErr == nil && err == nil {
		r.summary()
	}
	return err
}
