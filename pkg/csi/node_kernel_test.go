package csi

import (
	"github.com/trireme-csi/trireme/internal/testenv"

	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/internal/nbdtest"
	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/frontend"
	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// The tests in this file stage and publish real volumes: a one-replica
// Trireme volume served over NBD on 127.0.0.1, attached through FUSE and
// a loop device, formatted with mkfs and mounted. They need root.

// requireKernel skips the test without root, FUSE, loop devices or the
// tools, and fails it under CI, which has them all.
func requireKernel(t *testing.T, tools ...string) {
	t.Helper()
	testenv.Require(t, append(testenv.Kernel, tools...)...)
}

// servedVolume is a one-replica volume exported over NBD on 127.0.0.1;
// it is also its own VolumeLocator.
type servedVolume struct {
	id      string
	replica *blockstore.Replica
	primary *replication.Primary
	addr    string
}

func serveVolume(t *testing.T, id string, size int64) *servedVolume {
	t.Helper()
	replica, err := blockstore.Create(filepath.Join(t.TempDir(), id), id, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Close() })
	layout := replication.Layout{VolumeID: id, Size: size, Epoch: 1, Primary: "node-a",
		Replicas: []replication.ReplicaInfo{{NodeID: "node-a", Zone: "zone-a", State: replication.InSync}}}
	p, err := replication.NewPrimary(replica, layout, replication.PrimaryOptions{NodeID: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	v := &servedVolume{id: id, replica: replica, primary: p}
	v.addr = nbdtest.Listen(t, v)
	return v
}

func (v *servedVolume) Lookup(name string) (nbd.Export, error) {
	if name != v.id {
		return nil, nbd.ErrNoExport
	}
	return v.primary, nil
}

func (v *servedVolume) List() []string { return []string{v.id} }

func (v *servedVolume) PrimaryAddress(_ context.Context, id string) (string, error) {
	if id != v.id {
		return "", ErrVolumeNotFound
	}
	return v.addr, nil
}

func (v *servedVolume) PublishedNode(ctx context.Context, id string) (string, uint64, error) {
	if _, err := v.PrimaryAddress(ctx, id); err != nil {
		return "", 0, err
	}
	return "node-a", 0, nil
}

func (v *servedVolume) Health(ctx context.Context, id string) (VolumeHealth, error) {
	if _, err := v.PrimaryAddress(ctx, id); err != nil {
		return VolumeHealth{}, err
	}
	return VolumeHealth{Message: "1 of 1 replicas in sync"}, nil
}

// kernelEnv is a NodeServer over the host's mounts and the real frontend.
type kernelEnv struct {
	s        *NodeServer
	v        *servedVolume
	dir      string
	mountDir string
}

func newKernelEnv(t *testing.T, size int64) *kernelEnv {
	t.Helper()
	e := &kernelEnv{dir: t.TempDir()}
	e.mountDir = filepath.Join(e.dir, "attach")
	e.v = serveVolume(t, volA, size)
	e.s = e.newServer(t)
	t.Cleanup(func() { checkNoKernelLeftovers(t, e.dir) })
	return e
}

// newServer returns a Node service over the environment's directories,
// as an agent (re)started there would have.
func (e *kernelEnv) newServer(t *testing.T) *NodeServer {
	t.Helper()
	s, err := NewNodeServer(NodeConfig{NodeID: "node-a", StateDir: filepath.Join(e.dir, "state"),
		MountDir: e.mountDir, Locator: e.v, IOTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *kernelEnv) path(name string) string { return filepath.Join(e.dir, name) }

// stage stages the volume, and unstages it when the test ends.
func (e *kernelEnv) stage(t *testing.T, c *csipb.VolumeCapability) {
	t.Helper()
	_, err := e.s.NodeStageVolume(context.Background(), &csipb.NodeStageVolumeRequest{
		VolumeId: volA, StagingTargetPath: e.path("staging"), VolumeCapability: c})
	if err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
	t.Cleanup(func() { e.unstage(t) })
}

func (e *kernelEnv) unstage(t *testing.T) {
	t.Helper()
	_, err := e.s.NodeUnstageVolume(context.Background(), &csipb.NodeUnstageVolumeRequest{
		VolumeId: volA, StagingTargetPath: e.path("staging")})
	if err != nil {
		t.Errorf("NodeUnstageVolume: %v", err)
	}
}

// publish publishes the volume at target, and unpublishes it when the
// test ends.
func (e *kernelEnv) publish(t *testing.T, c *csipb.VolumeCapability, target string, readOnly bool) {
	t.Helper()
	_, err := e.s.NodePublishVolume(context.Background(), &csipb.NodePublishVolumeRequest{
		VolumeId: volA, StagingTargetPath: e.path("staging"), TargetPath: target,
		VolumeCapability: c, Readonly: readOnly})
	if err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	t.Cleanup(func() { e.unpublish(t, target) })
}

func (e *kernelEnv) unpublish(t *testing.T, target string) {
	t.Helper()
	_, err := e.s.NodeUnpublishVolume(context.Background(), &csipb.NodeUnpublishVolumeRequest{VolumeId: volA, TargetPath: target})
	if err != nil {
		t.Errorf("NodeUnpublishVolume: %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target %s left after unpublish: %v", target, err)
	}
}

// procMount returns the /proc/mounts line of path, if mounted.
func procMount(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == path {
			found = f
		}
	}
	return found
}

// checkNoKernelLeftovers fails the test for mounts or loop devices left
// under dir, then removes them.
func checkNoKernelLeftovers(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			t.Errorf("mount left behind: %s", line)
			unix.Unmount(f[1], unix.MNT_DETACH)
		}
	}
	if err := frontend.Cleanup(filepath.Join(dir, "attach")); err != nil {
		t.Errorf("attachments left behind: %v", err)
	}
	if out, err := exec.Command("losetup", "-a").CombinedOutput(); err == nil && bytes.Contains(out, []byte(dir)) {
		t.Errorf("losetup -a still lists %s:\n%s", dir, out)
	}
}

func TestNodeKernelFilesystem(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			requireKernel(t, "mkfs."+fs)
			e := newKernelEnv(t, 512<<20)
			c := mountCap(fs, csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
			e.stage(t, c)
			if m := procMount(t, e.path("staging")); len(m) < 3 || m[2] != fs || !strings.HasPrefix(m[0], "/dev/loop") {
				t.Fatalf("staging mount %v, want %s on a loop device", m, fs)
			}
			rw, ro := e.path("pod-rw/volume"), e.path("pod-ro/volume")
			e.publish(t, c, rw, false)
			e.publish(t, c, ro, true)

			data := bytes.Repeat([]byte("trireme "), 64<<10)
			writeFileSynced(t, filepath.Join(rw, "file"), data)
			if got, err := os.ReadFile(filepath.Join(ro, "file")); err != nil || !bytes.Equal(got, data) {
				t.Errorf("read through the read-only target: %d bytes, %v", len(got), err)
			}
			if err := os.WriteFile(filepath.Join(ro, "other"), data, 0o600); !errors.Is(err, syscall.EROFS) {
				t.Errorf("write through the read-only target: %v, want EROFS", err)
			}
			checkFilesystemStats(t, e, rw)
		})
	}
}

func writeFileSynced(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func checkFilesystemStats(t *testing.T, e *kernelEnv, path string) {
	t.Helper()
	resp, err := e.s.NodeGetVolumeStats(context.Background(), &csipb.NodeGetVolumeStatsRequest{VolumeId: volA, VolumePath: path})
	if err != nil {
		t.Fatalf("NodeGetVolumeStats: %v", err)
	}
	u := resp.GetUsage()
	if len(u) != 2 || u[0].GetTotal() <= 0 || u[0].GetTotal() > 512<<20 || u[0].GetUsed() < 512<<10 ||
		u[1].GetUnit() != csipb.VolumeUsage_INODES || u[1].GetUsed() < 1 {
		t.Errorf("usage %v", u)
	}
	if resp.GetVolumeCondition().GetAbnormal() {
		t.Errorf("condition %v", resp.GetVolumeCondition())
	}
}

// TestNodeKernelFilesystemPersists stages a volume, writes, unstages,
// and finds the data again after staging anew: it went to the replica,
// and a formatted volume is not formatted again.
func TestNodeKernelFilesystemPersists(t *testing.T) {
	requireKernel(t, "mkfs.ext4")
	e := newKernelEnv(t, 256<<20)
	c := mountCap("ext4", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	data := bytes.Repeat([]byte{0x5a}, 1<<20)
	t.Run("write", func(t *testing.T) {
		e.stage(t, c)
		e.publish(t, c, e.path("pod"), false)
		writeFileSynced(t, e.path("pod/file"), data)
	})
	if m := procMount(t, e.path("staging")); m != nil {
		t.Fatalf("staging still mounted after unstage: %v", m)
	}
	t.Run("read", func(t *testing.T) {
		e.stage(t, c)
		e.publish(t, c, e.path("pod"), false)
		if got, err := os.ReadFile(e.path("pod/file")); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read after restaging: %d bytes, %v", len(got), err)
		}
	})
}

func TestNodeKernelBlock(t *testing.T) {
	requireKernel(t)
	const size = 64 << 20
	e := newKernelEnv(t, size)
	c := blockCap()
	e.stage(t, c)
	target := e.path("pod/dev/volume")
	e.publish(t, c, target, false)

	fi, err := os.Stat(target)
	if err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Fatalf("target %v, %v: want a block device", fi, err)
	}
	data := bytes.Repeat([]byte("block volume "), 4096)[:48<<10]
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, len(data))
	if err := e.v.replica.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Errorf("replica does not hold the write: %v", err)
	}
	resp, err := e.s.NodeGetVolumeStats(context.Background(), &csipb.NodeGetVolumeStatsRequest{VolumeId: volA, VolumePath: target})
	if err != nil || len(resp.GetUsage()) != 1 || resp.GetUsage()[0].GetTotal() != size {
		t.Errorf("stats %v, %v: want %d bytes", resp, err, size)
	}
}
