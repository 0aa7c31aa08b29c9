package csi

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/internal/nbdtest"
)

// The tests in this file expand real volumes: a volume served over NBD
// on 127.0.0.1 from a file the test grows, staged through the real
// frontend, formatted and mounted.

// growableVolume is a volume served from a file the test grows, and the
// VolumeLocator that finds it.
type growableVolume struct{ *nbdtest.Volume }

func (v growableVolume) PrimaryAddress(_ context.Context, id string) (string, error) {
	if id != v.ID {
		return "", ErrVolumeNotFound
	}
	return v.Addr, nil
}

func (v growableVolume) PublishedNode(ctx context.Context, id string) (string, uint64, error) {
	_, err := v.PrimaryAddress(ctx, id)
	return "node-a", 0, err
}

func (v growableVolume) Health(ctx context.Context, id string) (VolumeHealth, error) {
	_, err := v.PrimaryAddress(ctx, id)
	return VolumeHealth{Message: "1 of 1 replicas in sync"}, err
}

// newGrowableEnv serves a growable volA of the given size and returns a
// Node service over the host's mounts and the real frontend.
func newGrowableEnv(t *testing.T, size int64) (*kernelEnv, growableVolume) {
	t.Helper()
	v := growableVolume{nbdtest.Serve(t, volA, size)}
	var err error
	e := &kernelEnv{dir: t.TempDir()}
	e.mountDir = filepath.Join(e.dir, "attach")
	e.s, err = NewNodeServer(NodeConfig{NodeID: "node-a", StateDir: filepath.Join(e.dir, "state"),
		MountDir: e.mountDir, Locator: v, IOTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkNoKernelLeftovers(t, e.dir) })
	return e, v
}

// expand calls NodeExpandVolume and checks the capacity it returns.
func expand(t *testing.T, e *kernelEnv, path string, c *csipb.VolumeCapability, size int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := e.s.NodeExpandVolume(ctx, &csipb.NodeExpandVolumeRequest{VolumeId: volA, VolumePath: path,
		StagingTargetPath: e.path("staging"), VolumeCapability: c,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: size}})
	if err != nil || resp.GetCapacityBytes() != size {
		t.Fatalf("NodeExpandVolume to %d: %v, %v", size, resp, err)
	}
}

// statfsBytes returns the size of the filesystem mounted at path.
func statfsBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

func TestNodeKernelExpandFilesystem(t *testing.T) {
	for _, tt := range []struct{ fs, tool string }{{"ext4", "resize2fs"}, {"xfs", "xfs_growfs"}} {
		t.Run(tt.fs, func(t *testing.T) {
			requireKernel(t, "mkfs."+tt.fs, tt.tool)
			if tt.fs == "ext4" {
				requireCapability(t, unix.CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE (ext4 online resize)")
			}
			const small, large = 320 << 20, 960 << 20
			e, v := newGrowableEnv(t, small)
			c := mountCap(tt.fs, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
			e.stage(t, c)
			pod := e.path("pod/volume")
			e.publish(t, c, pod, false)
			data := bytes.Repeat([]byte("grown "), 40<<10)
			writeFileSynced(t, filepath.Join(pod, "file"), data)
			before := statfsBytes(t, pod)
			if before > small {
				t.Fatalf("filesystem of %d bytes on a %d byte volume", before, small)
			}

			v.SetSize(t, large)
			expand(t, e, pod, c, large)
			after := statfsBytes(t, pod)
			if after-before < (large-small)*9/10 {
				t.Errorf("filesystem grew from %d to %d bytes, want about %d more", before, after, large-small)
			}
			expand(t, e, pod, c, large) // idempotent
			if again := statfsBytes(t, pod); again != after {
				t.Errorf("a second expansion changed the filesystem from %d to %d bytes", after, again)
			}
			if got, err := os.ReadFile(filepath.Join(pod, "file")); err != nil || !bytes.Equal(got, data) {
				t.Errorf("file written before the expansion: %d bytes, %v", len(got), err)
			}
			// The grown filesystem allocates more than the old volume held.
			allocate(t, filepath.Join(pod, "big"), small+(32<<20))
		})
	}
}

func TestNodeKernelExpandBlock(t *testing.T) {
	requireKernel(t)
	const small, large = 64 << 20, 160 << 20
	e, v := newGrowableEnv(t, small)
	c := blockCap()
	e.stage(t, c)
	target := e.path("pod/dev/volume")
	e.publish(t, c, target, false)
	old := bytes.Repeat([]byte("old end "), 8<<10)
	writeDevice(t, target, old, small-int64(len(old)))

	v.SetSize(t, large)
	expand(t, e, target, c, large)
	if got := blockDeviceSize(t, target); got != large {
		t.Errorf("BLKGETSIZE64 of the published device = %d, want %d", got, large)
	}
	grown := bytes.Repeat([]byte("new end "), 8<<10)
	writeDevice(t, target, grown, large-int64(len(grown)))
	if !bytes.Equal(v.Bytes(t, large-int64(len(grown)), len(grown)), grown) {
		t.Error("the volume does not hold the write to the grown end")
	}
	if !bytes.Equal(v.Bytes(t, small-int64(len(old)), len(old)), old) {
		t.Error("data written before the expansion changed")
	}
}

// writeDevice writes p at off on the device at path and syncs it.
func writeDevice(t *testing.T, path string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// blockDeviceSize returns the BLKGETSIZE64 of the device at path.
func blockDeviceSize(t *testing.T, path string) int64 {
	t.Helper()
	size, err := deviceSize(path)
	if err != nil {
		t.Fatal(err)
	}
	return size
}

// allocate creates a file of size bytes with fallocate, syncing it.
func allocate(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		t.Fatalf("fallocate %d bytes: %v", size, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// requireCapability skips t when the process lacks the capability: the
// kernel refuses ext4 online resize without CAP_SYS_RESOURCE, which some
// containers drop even for root. Under CI a capability missing only from
// the effective set fails the test; one missing from the bounding set
// cannot be had by anything CI installs, so the test is skipped, saying
// so.
func requireCapability(t *testing.T, capability int, name string) {
	t.Helper()
	eff, bnd := capabilitySet(t, "CapEff:"), capabilitySet(t, "CapBnd:")
	switch {
	case eff&(1<<capability) != 0:
		return
	case bnd&(1<<capability) == 0:
		t.Skipf("needs %s, which this machine's bounding set withholds from every process", name)
	case os.Getenv("CI") != "":
		t.Fatalf("CI must provide %s", name)
	}
	t.Skipf("needs %s", name)
}

// capabilitySet reads one capability set of this process from
// /proc/self/status.
func capabilitySet(t *testing.T, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, field); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, hex, err)
			}
			return caps
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
