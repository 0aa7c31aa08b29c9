package frontend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
)

// childEnv, when set to "addr,volume,mountDir", makes the test binary
// attach that volume, print its device and wait to be killed: an agent
// that dies with a volume attached.
const childEnv = "TRIREME_FRONTEND_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

// runChild attaches the volume described by spec and blocks.
func runChild(spec string) int {
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fmt.Fprintf(os.Stderr, "bad %s %q\n", childEnv, spec)
		return 2
	}
	resolve := func(context.Context) (string, error) { return parts[0], nil }
	a, err := Attach(context.Background(), AttachOptions{VolumeID: parts[1], Resolve: resolve, MountDir: parts[2]})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("DEVICE %s\n", a.Device())
	select {}
}

// alignedBuffer returns n bytes aligned for O_DIRECT, holding data.
func alignedBuffer(t *testing.T, data []byte) []byte {
	t.Helper()
	raw := make([]byte, len(data)+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&raw[0]))%4096)) % 4096
	buf := raw[skip : skip+len(data)]
	copy(buf, data)
	return buf
}

// openDevice opens a block device, closing it when the test ends.
func openDevice(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// pwrite writes all of p at off.
func pwrite(t *testing.T, fd int, p []byte, off int64) {
	t.Helper()
	if n, err := unix.Pwrite(fd, p, off); err != nil || n != len(p) {
		t.Fatalf("pwrite %d bytes at %d: wrote %d, %v", len(p), off, n, err)
	}
}

// pread reads len(p) bytes at off.
func pread(t *testing.T, fd int, p []byte, off int64) {
	t.Helper()
	if n, err := unix.Pread(fd, p, off); err != nil || n != len(p) {
		t.Fatalf("pread %d bytes at %d: read %d, %v", len(p), off, n, err)
	}
}

// discard issues BLKDISCARD on [off, off+n).
func discard(t *testing.T, fd int, off, n uint64) {
	t.Helper()
	r := [2]uint64{off, n}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKDISCARD, uintptr(unsafe.Pointer(&r))); errno != 0 {
		t.Fatalf("BLKDISCARD %d+%d: %v", off, n, errno)
	}
}

// attachForIO attaches a fresh 64 MiB volume and opens its device with
// the given flags.
func attachForIO(t *testing.T, id string, flags int) (*testVolume, int) {
	t.Helper()
	requireKernel(t)
	v := newVolume(t, id, 64<<20)
	a := attachVolume(t, v, mountDir(t), AttachOptions{})
	if !strings.HasPrefix(a.Device(), "/dev/loop") {
		t.Fatalf("Device() = %q, want /dev/loopN", a.Device())
	}
	return v, openDevice(t, a.Device(), flags)
}

func TestDirectIOThroughTheDeviceReachesTheReplica(t *testing.T) {
	v, fd := attachForIO(t, "vol-dio", unix.O_RDWR|unix.O_DIRECT)
	if size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64); err != nil || int64(size) != v.size {
		t.Fatalf("device size = %d (%v), want %d", size, err, v.size)
	}
	writes := []struct {
		off int64
		n   int
	}{
		{0, 4096},
		{1<<20 + 512, 128 << 10},
		{8 << 20, 3 << 20},
		{v.size - 1<<20, 1 << 20},
	}
	for i, w := range writes {
		pwrite(t, fd, alignedBuffer(t, pattern(w.n, byte(i+1))), w.off)
	}
	// No page cache sits between the device and the primary: a completed
	// direct write is there before any fsync.
	if !bytes.Equal(v.replicaBytes(writes[0].off, writes[0].n), pattern(writes[0].n, 1)) {
		t.Error("a completed direct write is not on the replica")
	}
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	for i, w := range writes {
		want := pattern(w.n, byte(i+1))
		got := alignedBuffer(t, make([]byte, w.n))
		pread(t, fd, got, w.off)
		if !bytes.Equal(got, want) {
			t.Errorf("device bytes at %d+%d differ from what was written", w.off, w.n)
		}
		if !bytes.Equal(v.replicaBytes(w.off, w.n), want) {
			t.Errorf("replica bytes at %d+%d differ from what was written", w.off, w.n)
		}
	}
}

func TestBufferedWriteReachesTheReplicaOnFsync(t *testing.T) {
	v, fd := attachForIO(t, "vol-buffered", unix.O_RDWR)
	data := pattern(10000, 0x5a)
	pwrite(t, fd, data, 20<<20+100)
	before := v.export.flushes.Load()
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if v.export.flushes.Load() == before {
		t.Error("fsync of the device sent no NBD flush")
	}
	if !bytes.Equal(v.replicaBytes(20<<20+100, len(data)), data) {
		t.Error("buffered write is not on the replica after fsync")
	}
}

func TestDiscardZeroesTheReplica(t *testing.T) {
	v, fd := attachForIO(t, "vol-discard", unix.O_RDWR|unix.O_DIRECT)
	data := pattern(3<<20, 3)
	pwrite(t, fd, alignedBuffer(t, data), 8<<20)
	discard(t, fd, 9<<20, 1<<20)
	if !bytes.Equal(v.replicaBytes(9<<20, 1<<20), make([]byte, 1<<20)) {
		t.Error("discarded range does not read as zeroes on the replica")
	}
	if !bytes.Equal(v.replicaBytes(8<<20, 1<<20), data[:1<<20]) || !bytes.Equal(v.replicaBytes(10<<20, 1<<20), data[2<<20:]) {
		t.Error("discard changed bytes outside its range")
	}
}

// testFile is a file written to a filesystem on a volume.
type testFile struct {
	name string
	data []byte
}

var testFiles = []testFile{
	{"empty", nil},
	{"small", []byte("hello, trireme\n")},
	{"dir/medium", pattern(1<<20+123, 7)},
	{"dir/sub/large", pattern(6<<20, 9)},
}

// mountFS mounts dev at a new directory and returns an unmount function;
// the mount is also undone when the test ends.
func mountFS(t *testing.T, dev, fsType string) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, fsType, 0, ""); err != nil {
		t.Fatalf("mount %s (%s): %v", dev, fsType, err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			mounted = false
			if err := unix.Unmount(dir, 0); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		}
	}
	t.Cleanup(unmount)
	return dir, unmount
}

// writeFiles writes testFiles under dir and syncs the filesystem.
func writeFiles(t *testing.T, dir string) {
	t.Helper()
	for _, f := range testFiles {
		path := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		t.Fatalf("syncfs: %v", err)
	}
}

// checkFiles compares the files under dir with testFiles.
func checkFiles(t *testing.T, dir string) {
	t.Helper()
	for _, f := range testFiles {
		got, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Errorf("read %s: %v", f.name, err)
			continue
		}
		if !bytes.Equal(got, f.data) {
			t.Errorf("%s: %d bytes read back differ from the %d written", f.name, len(got), len(f.data))
		}
	}
}

func TestFilesystemSurvivesDetachAndReattach(t *testing.T) {
	tests := []struct {
		fsType string
		mkfs   []string
	}{
		{"ext4", []string{"mkfs.ext4", "-q", "-F"}},
		{"xfs", []string{"mkfs.xfs", "-q", "-f"}},
	}
	for _, tt := range tests {
		t.Run(tt.fsType, func(t *testing.T) {
			requireKernel(t, tt.mkfs[0])
			v := newVolume(t, "vol-"+tt.fsType, 512<<20)
			dir := mountDir(t)

			a := attachVolume(t, v, dir, AttachOptions{})
			run(t, tt.mkfs[0], append(tt.mkfs[1:], a.Device())...)
			fsDir, unmount := mountFS(t, a.Device(), tt.fsType)
			writeFiles(t, fsDir)
			unmount()
			detach(t, a)

			b := attachVolume(t, v, dir, AttachOptions{})
			fsDir, unmount = mountFS(t, b.Device(), tt.fsType)
			checkFiles(t, fsDir)
			unmount()
		})
	}
}

func TestWriteInFlightSurvivesServerRestart(t *testing.T) {
	requireKernel(t)
	v := newVolume(t, "vol-restart", 64<<20)
	a := attachVolume(t, v, mountDir(t), AttachOptions{RetryTimeout: 30 * time.Second})
	fd := openDevice(t, a.Device(), unix.O_RDWR|unix.O_DIRECT)
	data := pattern(256<<10, 0x33)

	v.export.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := unix.Pwrite(fd, alignedBuffer(t, data), 4<<20)
		done <- err
	}()
	select {
	case <-v.export.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the write never reached the export")
	}
	v.stop()
	select {
	case err := <-done:
		t.Fatalf("write returned (%v) while the server was down, want it to wait", err)
	case <-time.After(500 * time.Millisecond):
	}

	v.export.armed.Store(false)
	close(v.export.gate)
	v.start()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("write after the server restarted: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("write did not complete after the server restarted")
	}
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if !bytes.Equal(v.replicaBytes(4<<20, len(data)), data) {
		t.Fatal("replica does not hold the write that was in flight")
	}
}

func TestDetachRefusesMountedDeviceAndIsIdempotent(t *testing.T) {
	requireKernel(t, "mkfs.ext4")
	v := newVolume(t, "vol-busy", 64<<20)
	a := attachVolume(t, v, mountDir(t), AttachOptions{})
	run(t, "mkfs.ext4", "-q", "-F", a.Device())
	_, unmount := mountFS(t, a.Device(), "ext4")

	ctx := context.Background()
	if err := a.Detach(ctx); !errors.Is(err, ErrDeviceBusy) {
		t.Fatalf("Detach of a mounted device = %v, want ErrDeviceBusy", err)
	}
	fd := openDevice(t, a.Device(), unix.O_RDONLY)
	pread(t, fd, make([]byte, 4096), 0)
	unix.Close(fd)

	unmount()
	for i := range 3 {
		if err := a.Detach(ctx); err != nil {
			t.Fatalf("Detach #%d after unmount: %v", i+1, err)
		}
	}
}

func TestReadOnlyAttachment(t *testing.T) {
	requireKernel(t)
	v := newVolume(t, "vol-ro", 16<<20)
	data := pattern(8192, 0x42)
	if err := v.primary.WriteAt(context.Background(), data, 4096, true); err != nil {
		t.Fatal(err)
	}
	a := attachVolume(t, v, mountDir(t), AttachOptions{ReadOnly: true})
	if wfd, err := unix.Open(a.Device(), unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		_, werr := unix.Pwrite(wfd, make([]byte, 4096), 0)
		unix.Close(wfd)
		if !errors.Is(werr, unix.EPERM) && !errors.Is(werr, unix.EROFS) {
			t.Fatalf("write to a read-only device = %v, want EPERM or EROFS", werr)
		}
	} else if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EACCES) {
		t.Fatalf("opening a read-only device for writing = %v, want EROFS or EACCES", err)
	}
	fd := openDevice(t, a.Device(), unix.O_RDONLY|unix.O_DIRECT)
	got := alignedBuffer(t, make([]byte, len(data)))
	pread(t, fd, got, 4096)
	if !bytes.Equal(got, data) {
		t.Fatal("read-only device returns the wrong bytes")
	}
}

func TestFailedAttachLeavesNothingBehind(t *testing.T) {
	requireKernel(t)
	v := newVolume(t, "vol-fail", 1<<20+512)
	dir := mountDir(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := lis.Addr().String()
	lis.Close()

	tests := []struct {
		name string
		opts AttachOptions
		want error
	}{
		{"primary unreachable", AttachOptions{VolumeID: v.id, MountDir: dir, RetryTimeout: 300 * time.Millisecond,
			Resolve: func(context.Context) (string, error) { return deadAddr, nil }}, nbdclient.ErrTimeout},
		{"unknown volume", AttachOptions{VolumeID: "vol-none", MountDir: dir, RetryTimeout: 300 * time.Millisecond,
			Resolve: v.resolve}, nbdclient.ErrUnknownExport},
		{"size not a multiple of the block size", AttachOptions{VolumeID: v.id, MountDir: dir, BlockSize: 4096,
			Resolve: v.resolve}, ErrInvalidOptions},
		{"no loop device after the FUSE mount", AttachOptions{VolumeID: v.id, MountDir: dir,
			Resolve: v.resolve}, ErrNoFreeLoop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if errors.Is(tt.want, ErrNoFreeLoop) {
				saved := loopControl
				loopControl = filepath.Join(t.TempDir(), "no-loop-control")
				defer func() { loopControl = saved }()
			}
			a, err := Attach(context.Background(), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Attach = %v, want %v", err, tt.want)
			}
			if a != nil {
				t.Fatal("Attach returned an attachment with its error")
			}
			checkNoLeftovers(t, dir)
		})
	}
}

func TestSecondAttachOfAVolumeIsRefused(t *testing.T) {
	requireKernel(t)
	v := newVolume(t, "vol-twice", 16<<20)
	dir := mountDir(t)
	a := attachVolume(t, v, dir, AttachOptions{})
	_, err := Attach(context.Background(), AttachOptions{VolumeID: v.id, Resolve: v.resolve, MountDir: dir})
	if !errors.Is(err, ErrAlreadyAttached) {
		t.Fatalf("second Attach = %v, want ErrAlreadyAttached", err)
	}
	fd := openDevice(t, a.Device(), unix.O_RDWR|unix.O_DIRECT)
	pwrite(t, fd, alignedBuffer(t, pattern(4096, 1)), 0)
}

func TestAttachValidatesOptions(t *testing.T) {
	resolve := func(context.Context) (string, error) { return "127.0.0.1:0", nil }
	tests := []struct {
		name string
		opts AttachOptions
	}{
		{"no volume id", AttachOptions{Resolve: resolve, MountDir: "/tmp"}},
		{"volume id with a slash", AttachOptions{VolumeID: "a/b", Resolve: resolve, MountDir: "/tmp"}},
		{"volume id dot-dot", AttachOptions{VolumeID: "..", Resolve: resolve, MountDir: "/tmp"}},
		{"no resolver", AttachOptions{VolumeID: "v", MountDir: "/tmp"}},
		{"no mount dir", AttachOptions{VolumeID: "v", Resolve: resolve}},
		{"block size not a power of two", AttachOptions{VolumeID: "v", Resolve: resolve, MountDir: "/tmp", BlockSize: 3000}},
		{"block size too large", AttachOptions{VolumeID: "v", Resolve: resolve, MountDir: "/tmp", BlockSize: 8192}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Attach(context.Background(), tt.opts); !errors.Is(err, ErrInvalidOptions) {
				t.Fatalf("Attach = %v, want ErrInvalidOptions", err)
			}
		})
	}
}

func TestCleanupRemovesWhatAKilledAgentLeft(t *testing.T) {
	requireKernel(t)
	v := newVolume(t, "vol-crash", 16<<20)
	dir := mountDir(t)
	device := startChildAgent(t, v, dir)

	// Hold the device open across the kill, as a mounted filesystem would.
	hold, err := os.Open(device)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	killChild(t)

	if err := Cleanup(dir); !errors.Is(err, ErrDeviceBusy) {
		t.Fatalf("Cleanup with the device held = %v, want ErrDeviceBusy", err)
	}
	if mounts, _ := volumeMounts(dir); len(mounts) != 0 {
		t.Fatalf("Cleanup left %d FUSE mounts", len(mounts))
	}
	hold.Close()
	if err := Cleanup(dir); err != nil {
		t.Fatalf("Cleanup after the device was closed: %v", err)
	}
}

// child is the agent process started by startChildAgent.
var child *exec.Cmd

// startChildAgent runs this test binary as an agent attaching v under
// dir and returns the device it printed.
func startChildAgent(t *testing.T, v *testVolume, dir string) string {
	t.Helper()
	addr, _ := v.resolve(context.Background())
	child = exec.Command(os.Args[0])
	child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%s,%s", childEnv, addr, v.id, dir))
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killChild(t) })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if dev, ok := strings.CutPrefix(sc.Text(), "DEVICE "); ok {
				lines <- dev
			}
		}
	}()
	select {
	case dev := <-lines:
		return dev
	case <-time.After(20 * time.Second):
		t.Fatal("child agent did not attach")
		return ""
	}
}

// killChild kills the child agent by pid and reaps it.
func killChild(t *testing.T) {
	if child == nil || child.Process == nil {
		return
	}
	child.Process.Kill()
	child.Wait()
	child = nil
}

// The FUSE connection of an attached volume is not passed on to the
// programs the process runs: one that outlived it would keep the
// connection, and the loop device above it, alive.
func TestFUSEDeviceIsClosedOnExec(t *testing.T) {
	attachForIO(t, "vol-cloexec", unix.O_RDWR)
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, e := range entries {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || target != "/dev/fuse" {
			continue
		}
		found++
		fd, _ := strconv.Atoi(e.Name())
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("/dev/fuse descriptor %d has flags %#x (%v): not close-on-exec", fd, flags, err)
		}
	}
	if found == 0 {
		t.Fatal("no /dev/fuse descriptor open after attaching")
	}
}
