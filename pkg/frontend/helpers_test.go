package frontend

import (
	"github.com/trireme-csi/trireme/internal/testenv"

	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// requireKernel skips the test without root, /dev/fuse or loop devices,
// and fails it instead when CI is set: CI has them all.
func requireKernel(t *testing.T, tools ...string) {
	t.Helper()
	testenv.Require(t, append([]string{"root", "/dev/fuse", loopControl}, tools...)...)
}

// gatedExport passes calls to an Export and counts flushes; while
// armed, writes announce themselves on entered and wait for gate.
type gatedExport struct {
	nbd.Export
	armed   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
	flushes atomic.Int32
}

func (g *gatedExport) Flush(ctx context.Context) error {
	g.flushes.Add(1)
	return g.Export.Flush(ctx)
}

func (g *gatedExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if g.armed.Load() {
		g.entered <- struct{}{}
		select {
		case <-g.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return g.Export.WriteAt(ctx, p, off, fua)
}

// testVolume is a one-replica Trireme volume: a replication.Primary
// over a blockstore replica, exported by an NBD server on 127.0.0.1
// that can be stopped and started again on the same address.
type testVolume struct {
	t       *testing.T
	id      string
	size    int64
	store   *blockstore.Replica
	export  *gatedExport
	primary *replication.Primary

	mu   sync.Mutex
	addr string
	srv  *nbd.Server
}

// newVolume creates and serves a volume of the given size.
func newVolume(t *testing.T, id string, size int64) *testVolume {
	t.Helper()
	store, err := blockstore.Create(filepath.Join(t.TempDir(), id), id, size)
	if err != nil {
		t.Fatalf("create replica: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	layout := replication.Layout{VolumeID: id, Size: size, Epoch: 1, Primary: "n1",
		Replicas: []replication.ReplicaInfo{{NodeID: "n1", Zone: "zone-a", State: replication.InSync}}}
	p, err := replication.NewPrimary(store, layout, replication.PrimaryOptions{NodeID: "n1"})
	if err != nil {
		t.Fatalf("start primary: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	v := &testVolume{t: t, id: id, size: size, store: store, primary: p, addr: "127.0.0.1:0",
		export: &gatedExport{Export: p, entered: make(chan struct{}, 64), gate: make(chan struct{})}}
	v.start()
	t.Cleanup(v.stop)
	return v
}

func (v *testVolume) Lookup(name string) (nbd.Export, error) {
	if name != v.id {
		return nil, nbd.ErrNoExport
	}
	return v.export, nil
}

func (v *testVolume) List() []string { return []string{v.id} }

// resolve is the volume's endpoint resolver.
func (v *testVolume) resolve(context.Context) (string, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.addr, nil
}

// start serves the volume on its address (a random port the first time).
func (v *testVolume) start() {
	v.t.Helper()
	addr, _ := v.resolve(context.Background())
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		v.t.Fatalf("listen on %s: %v", addr, err)
	}
	srv := nbd.NewServer(v, nbd.Options{})
	v.mu.Lock()
	v.addr, v.srv = lis.Addr().String(), srv
	v.mu.Unlock()
	go srv.Serve(lis)
}

// stop closes the server and every connection to it.
func (v *testVolume) stop() {
	v.mu.Lock()
	srv := v.srv
	v.srv = nil
	v.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// replicaBytes reads the replica's data directly.
func (v *testVolume) replicaBytes(off int64, n int) []byte {
	v.t.Helper()
	b := make([]byte, n)
	if err := v.store.ReadAt(b, off); err != nil {
		v.t.Fatalf("read replica: %v", err)
	}
	return b
}

// mountDir returns a fresh mount directory that must be empty of
// mounts and loop devices when the test ends.
func mountDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { checkNoLeftovers(t, dir) })
	return dir
}

// attachVolume attaches v and detaches it when the test ends.
func attachVolume(t *testing.T, v *testVolume, dir string, opts AttachOptions) *Attachment {
	t.Helper()
	opts.VolumeID, opts.Resolve, opts.MountDir = v.id, v.resolve, dir
	if opts.RetryTimeout == 0 {
		opts.RetryTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := Attach(ctx, opts)
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { detach(t, a) })
	return a
}

// detach detaches a, failing the test on error.
func detach(t *testing.T, a *Attachment) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Detach(ctx); err != nil {
		t.Errorf("Detach: %v", err)
	}
}

// checkNoLeftovers fails the test if a mount or a loop device under dir
// remains, as /proc/mounts, sysfs and losetup see them.
func checkNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	dir, _ = filepath.EvalSymlinks(dir)
	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && isUnder(unescapeOctal(f[1]), dir) {
			t.Errorf("mount left behind: %s", line)
		}
	}
	for _, i := range loopIndexes() {
		if backing, bound := loopBacking(i); bound && isUnder(backing, dir) {
			t.Errorf("loop device left behind: /dev/loop%d on %s", i, backing)
		}
	}
	if out, err := exec.Command("losetup", "-a").CombinedOutput(); err == nil && bytes.Contains(out, []byte(dir)) {
		t.Errorf("losetup -a still lists %s:\n%s", dir, out)
	}
}

// pattern returns n bytes that differ with seed and position.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i*13) ^ byte(i>>11)
	}
	return b
}

// run runs a command, failing the test with its output on error.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
