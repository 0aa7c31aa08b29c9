// Package demo is Trireme's guided tour: three storage nodes in three
// zones, one volume replicated to all of them, real data written through
// one NBD client and read back through another.
package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// volumeSize leaves room for a tar of the Go source tree (about 160 MiB).
const volumeSize = 512 << 20

const volumeID = "demo-volume"

// Options configure the demo.
type Options struct {
	// Binary is the trireme executable that the node processes run.
	Binary string
	// Dir holds the nodes' data; it is removed at the end unless Keep.
	Dir  string
	Keep bool
	// Out receives the narration.
	Out io.Writer
}

// Run plays the demo and returns an error if any check fails.
func Run(ctx context.Context, o Options) error {
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }
	if !o.Keep {
		defer os.RemoveAll(o.Dir)
	}

	say("Starting three Trireme storage nodes, one per availability zone:")
	cluster, err := localcluster.Start(ctx, localcluster.Options{Binary: o.Binary, Dir: o.Dir}, localcluster.ThreeZones)
	if err != nil {
		return err
	}
	defer cluster.Stop()
	for _, n := range cluster.Nodes {
		say("  %s in %s, listening on %s (pid %d)", n.ID, n.Zone, n.IP, n.PID())
	}

	nodes := []string{"node-a", "node-b", "node-c"}
	layout, err := cluster.CreateVolume(ctx, volumeID, volumeSize, nodes...)
	if err != nil {
		return err
	}
	primary := cluster.Node(layout.Primary)
	say("\nCreated volume %q (%d MiB) with a replica on each node.", volumeID, volumeSize>>20)
	say("  %s is the primary: every write goes to it, and it acknowledges a write", layout.Primary)
	say("  only once all three replicas have it. Clients reach the volume at")
	say("  %s", primary.NBDURI(volumeID))

	archive, files, err := makeArchive(o.Dir)
	if err != nil {
		return err
	}
	return copyAndCheck(ctx, cluster, primary, archive, files, nodes, say)
}

func copyAndCheck(ctx context.Context, cluster *localcluster.Cluster, primary *localcluster.Node,
	archive string, files int, nodes []string, say func(string, ...any)) error {
	fi, err := os.Stat(archive)
	if err != nil {
		return err
	}
	say("\nWriting a tar of the Go source tree (%d files, %d MiB) onto the volume with nbdcopy...",
		files, fi.Size()>>20)
	start := time.Now()
	if err := run("nbdcopy", "--flush", archive, primary.NBDURI(volumeID)); err != nil {
		return err
	}
	say("  done in %s, %.0f MiB/s, every byte on three nodes.", time.Since(start).Round(time.Millisecond),
		float64(fi.Size())/(1<<20)/time.Since(start).Seconds())

	readBack := filepath.Join(filepath.Dir(archive), "read-back.img")
	say("\nReading the whole volume back with a different client, qemu-img...")
	if err := run("qemu-img", "convert", "-f", "raw", "-O", "raw", primary.NBDURI(volumeID), readBack); err != nil {
		return err
	}
	if err := compareArchive(archive, readBack, fi.Size()); err != nil {
		return err
	}
	listed, err := countTarEntries(readBack)
	if err != nil {
		return err
	}
	say("  the first %d MiB match the archive byte for byte, and tar lists %d entries on it.",
		fi.Size()>>20, listed)

	say("\nAsking every node for a checksum of its own replica:")
	sums, err := cluster.Checksums(ctx, volumeID, nodes...)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		say("  %s  %s", n, sums[n])
	}
	if sums[nodes[0]] != sums[nodes[1]] || sums[nodes[0]] != sums[nodes[2]] {
		return fmt.Errorf("replicas differ: %v", sums)
	}
	say("  all three replicas hold the same bytes.")
	say("\nDemo complete. Stopping the nodes.")
	return nil
}

// makeArchive writes a tar of the Go toolchain's source tree.
func makeArchive(dir string) (string, int, error) {
	src := filepath.Join(runtime.GOROOT(), "src")
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		src = filepath.Join(strings.TrimSpace(string(out)), "src")
	}
	path := filepath.Join(dir, "go-src.tar")
	if err := run("tar", "-cf", path, "-C", filepath.Dir(src), "src"); err != nil {
		return "", 0, err
	}
	n, err := countTarEntries(path)
	return path, n, err
}

func countTarEntries(path string) (int, error) {
	out, err := exec.Command("tar", "-tf", path).Output()
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", path, err)
	}
	return strings.Count(string(out), "\n"), nil
}

func compareArchive(archive, image string, n int64) error {
	a, err := hashPrefix(archive, n)
	if err != nil {
		return err
	}
	b, err := hashPrefix(image, n)
	if err != nil {
		return err
	}
	if a != b {
		return fmt.Errorf("data read back differs from the archive (sha256 %s, want %s)", b, a)
	}
	return nil
}

func hashPrefix(path string, n int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
