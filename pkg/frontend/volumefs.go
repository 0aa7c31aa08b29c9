package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
)

// FUSE settings of a volume mount.
const (
	fsType = "trireme" // the mount shows as fuse.trireme
	// maxFUSERequest is the largest read or write the kernel sends; it
	// is clamped to /proc/sys/fs/fuse/max_pages_limit.
	maxFUSERequest = 1 << 20
	// maxBackground bounds the asynchronous requests (the loop device's
	// direct I/O) the kernel keeps in flight.
	maxBackground = 128
	// cacheTimeout is how long the kernel may cache the file's name and
	// attributes. The size changes only when the volume grows, and
	// Resize then invalidates the cached attributes.
	cacheTimeout = time.Hour
	// errorLogInterval spaces the log lines about failed I/O.
	errorLogInterval = 10 * time.Second
)

// blockDevice is what the FUSE file reads and writes; nbdclient.Client
// implements it.
type blockDevice interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	Flush(ctx context.Context) error
	WriteZeroes(ctx context.Context, off, length int64, fua bool) error
}

// volumeFile is the one regular file of a volume's FUSE mount. Its size
// is the volume's: it grows when the volume does (see grow), and never
// shrinks.
type volumeFile struct {
	fs.Inode
	volumeID string
	dev      blockDevice
	size     atomic.Int64
	readOnly bool
	created  time.Time
	errs     errorLog
}

var (
	_ fs.NodeOpener    = (*volumeFile)(nil)
	_ fs.NodeReader    = (*volumeFile)(nil)
	_ fs.NodeWriter    = (*volumeFile)(nil)
	_ fs.NodeFsyncer   = (*volumeFile)(nil)
	_ fs.NodeFlusher   = (*volumeFile)(nil)
	_ fs.NodeAllocater = (*volumeFile)(nil)
	_ fs.NodeGetattrer = (*volumeFile)(nil)
	_ fs.NodeSetattrer = (*volumeFile)(nil)
)

// newVolumeFile returns the file for a volume of the given size.
func newVolumeFile(volumeID string, dev blockDevice, size int64, readOnly bool) *volumeFile {
	f := &volumeFile{volumeID: volumeID, dev: dev, readOnly: readOnly, created: time.Now()}
	f.size.Store(size)
	return f
}

// grow raises the file's size to size, unless it is already as large.
// The kernel sees the new size once its cached attributes are
// invalidated (Attachment.Resize does it).
func (f *volumeFile) grow(size int64) {
	for {
		old := f.size.Load()
		if size <= old || f.size.CompareAndSwap(old, size) {
			return
		}
	}
}

// handle is one open file description; sync is set for O_SYNC and
// O_DSYNC opens, whose writes are sent with FUA.
type handle struct{ sync bool }

// Open refuses writers of a read-only volume and turns off the page
// cache, so that every read and write goes to the primary.
func (f *volumeFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if f.readOnly && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	h := &handle{sync: flags&syscall.O_DSYNC != 0}
	return h, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_PARALLEL_DIRECT_WRITES, 0
}

// Read reads up to the end of the volume.
func (f *volumeFile) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	size := f.size.Load()
	if off >= size {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), size-off)]
	if err := f.dev.ReadAt(ctx, p, off); err != nil {
		return nil, f.fail("read", err)
	}
	return fuse.ReadResultData(p), 0
}

// Write writes up to the end of the volume; a write starting past it
// fails with ENOSPC, as on a block device.
func (f *volumeFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.readOnly {
		return 0, syscall.EROFS
	}
	size := f.size.Load()
	if off >= size {
		return 0, syscall.ENOSPC
	}
	p := data[:min(int64(len(data)), size-off)]
	h, _ := fh.(*handle)
	if err := f.dev.WriteAt(ctx, p, off, h != nil && h.sync); err != nil {
		return 0, f.fail("write", err)
	}
	return uint32(len(p)), 0
}

// Fsync makes every completed write durable with NBD_CMD_FLUSH.
func (f *volumeFile) Fsync(ctx context.Context, _ fs.FileHandle, _ uint32) syscall.Errno {
	if err := f.dev.Flush(ctx); err != nil {
		return f.fail("flush", err)
	}
	return 0
}

// Flush is called on close. Nothing is buffered, so there is nothing to do.
func (f *volumeFile) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return 0 }

// Allocate implements fallocate: punching a hole or zeroing a range
// becomes NBD_CMD_WRITE_ZEROES (which may deallocate, and always reads
// back as zeroes); plain allocation inside the volume does nothing.
func (f *volumeFile) Allocate(ctx context.Context, _ fs.FileHandle, off, length uint64, mode uint32) syscall.Errno {
	start, end, errno := f.allocationRange(off, length, mode)
	if errno != 0 || mode&(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_ZERO_RANGE) == 0 || start >= end {
		return errno
	}
	if err := f.dev.WriteZeroes(ctx, start, end-start, false); err != nil {
		return f.fail("zero", err)
	}
	return 0
}

// allocationRange checks an fallocate mode and clips its range to the
// volume. Ranges that would grow the file fail with ENOSPC.
func (f *volumeFile) allocationRange(off, length uint64, mode uint32) (int64, int64, syscall.Errno) {
	const known = unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_ZERO_RANGE
	keep := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	size := uint64(f.size.Load())
	switch {
	case f.readOnly:
		return 0, 0, syscall.EROFS
	case mode&^known != 0:
		return 0, 0, syscall.EOPNOTSUPP
	case mode&unix.FALLOC_FL_PUNCH_HOLE != 0 && !keep:
		return 0, 0, syscall.EINVAL
	case off > size || length > size-off:
		if !keep {
			return 0, 0, syscall.ENOSPC
		}
	}
	start := int64(min(off, size))
	end := int64(min(off+length, size))
	return start, end, 0
}

// Getattr reports a regular file of the volume's size, readable and
// writable by root only.
func (f *volumeFile) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fillAttr(&out.Attr)
	return 0
}

// Setattr refuses to change the size; other changes are ignored.
func (f *volumeFile) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if size, ok := in.GetSize(); ok && int64(size) != f.size.Load() {
		return syscall.EPERM
	}
	f.fillAttr(&out.Attr)
	return 0
}

// fillAttr describes the file.
func (f *volumeFile) fillAttr(a *fuse.Attr) {
	a.Mode = syscall.S_IFREG | 0o600
	if f.readOnly {
		a.Mode = syscall.S_IFREG | 0o400
	}
	size := f.size.Load()
	a.Size = uint64(size)
	a.Blocks = uint64(size+511) / 512
	a.Blksize = 4096
	a.Nlink = 1
	a.SetTimes(&f.created, &f.created, &f.created)
}

// fail maps an I/O error to the errno the kernel sees, logging it at
// most once per errorLogInterval.
func (f *volumeFile) fail(op string, err error) syscall.Errno {
	errno := errnoOf(err)
	f.errs.report(err, op, f.volumeID, errno)
	return errno
}

// errnoOf chooses the errno for an I/O error: the server's own for the
// few it can mean on a block device, EIO for everything else (timeouts
// included), EINTR when the kernel interrupted the request.
func errnoOf(err error) syscall.Errno {
	var remote *nbdclient.RemoteError
	switch {
	case errors.As(err, &remote) && (remote.Errno == syscall.ENOSPC || remote.Errno == syscall.EPERM):
		return remote.Errno
	case errors.Is(err, nbdclient.ErrReadOnly):
		return syscall.EROFS
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	default:
		return syscall.EIO
	}
}

// errorLog rate-limits the log lines about failed I/O, which come in
// bursts when the primary is unreachable.
type errorLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// report logs err unless another error was logged recently.
func (l *errorLog) report(err error, op, volumeID string, errno syscall.Errno) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.last) < errorLogInterval {
		l.suppressed++
		return
	}
	klog.ErrorS(err, "Volume I/O failed", "volume", volumeID, "op", op, "errno", errno.Error(), "suppressed", l.suppressed)
	l.last, l.suppressed = time.Now(), 0
}

// mountVolume mounts a FUSE file system at dir holding file as
// FileName, and serves it.
func mountVolume(dir, volumeID string, file *volumeFile) (*fuse.Server, error) {
	root := &fs.Inode{}
	opts := volumeFSOptions(volumeID, func(ctx context.Context) {
		child := root.NewPersistentInode(ctx, file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
		root.AddChild(FileName, child, false)
	})
	// The library opens /dev/fuse without O_CLOEXEC. Holding ForkLock
	// while it does, and until the descriptor is marked, keeps a program
	// started meanwhile by another goroutine (mkfs, mount) from
	// inheriting it. The mount is direct (DirectMountStrict), so nothing
	// forks under the lock.
	syscall.ForkLock.RLock()
	server, err := fuse.NewServer(fs.NewNodeFS(root, opts), dir, &opts.MountOptions)
	if err == nil {
		closeFUSEOnExec()
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("mount FUSE at %s: %w", dir, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		unmountVolume(server, dir)
		return nil, fmt.Errorf("mount FUSE at %s: %w", dir, err)
	}
	return server, nil
}

// closeFUSEOnExec marks every /dev/fuse descriptor of the process
// close-on-exec. The FUSE library opens the device without the flag, so
// every program the agent runs (mount, umount, losetup, mkfs) would
// inherit the connection: one that outlives the agent keeps the FUSE
// connection, and the loop device above it, alive and hung.
func closeFUSEOnExec() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		klog.ErrorS(err, "Listing file descriptors to mark /dev/fuse close-on-exec failed")
		return
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || target != "/dev/fuse" {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
			klog.ErrorS(err, "Marking /dev/fuse close-on-exec failed", "fd", fd)
		}
	}
}

// volumeFSOptions configures a volume mount. It calls mount(2) itself
// (no fusermount) and leaves out allow_other, so that only root can
// reach the file; permissions are not checked in the kernel (no
// default_permissions) because no one else can open the mount.
// Asynchronous direct I/O lets the loop device keep many requests in
// flight.
func volumeFSOptions(volumeID string, onAdd func(context.Context)) *fs.Options {
	timeout := cacheTimeout
	return &fs.Options{
		EntryTimeout: &timeout,
		AttrTimeout:  &timeout,
		OnAdd:        onAdd,
		MountOptions: fuse.MountOptions{
			FsName:            "trireme:" + volumeID,
			Name:              fsType,
			DirectMountStrict: true,
			DirectMountFlags:  unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC,
			MaxWrite:          maxFUSERequest,
			MaxBackground:     maxBackground,
			DisableXAttrs:     true,
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
		},
	}
}
