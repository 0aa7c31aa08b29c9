// Package frontend presents a remote Trireme volume to this node's kernel
// as a block device, using only FUSE and loop devices, which every Linux
// kernel has.
//
// Attach connects an NBD client to the volume's primary, mounts a FUSE
// file system at MountDir/<volume id> holding one file, "volume", whose
// reads, writes, fsync and hole punching become NBD requests, and binds
// a loop device to that file. The FUSE file is opened with direct I/O,
// so no page cache sits between the loop device and the network: a flush
// of /dev/loopN reaches the primary as NBD_CMD_FLUSH.
//
// The loop device is set to autoclear: it detaches when its last user
// closes it. The agent holds it open while the volume is attached, so a
// crashed agent leaves only the devices that are still mounted, and
// Cleanup removes what is left once the agent restarts.
//
// Known limits:
//   - The FUSE server runs in the agent's process. If the agent dies,
//     every filesystem on an attached volume gets I/O errors until it is
//     unmounted and staged again; the FUSE connection cannot be taken
//     over by the restarted agent.
//   - The agent sits in the kernel's writeback path. Under severe memory
//     pressure, reclaim that writes back through this device can wait on
//     the agent; the agent process should be marked PR_SET_IO_FLUSHER.
package frontend

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
)

// DefaultBlockSize is the logical block size of the loop device when
// AttachOptions.BlockSize is zero. 512 matches what cloud disks report,
// so filesystems made elsewhere can be mounted.
const DefaultBlockSize = 512

// FileName is the name of the file in each FUSE mount.
const FileName = "volume"

// AttachOptions say which volume to attach and how.
type AttachOptions struct {
	// VolumeID names the volume and its NBD export. It must be usable as
	// a file name.
	VolumeID string
	// Generation is the attachment generation ControllerPublish gave this
	// node. The primary refuses the frontend, with EPERM, once a later
	// publish raises the volume's generation past it. Zero opens the
	// volume without one: administrative access, never refused (see
	// api.ExportName).
	Generation uint64
	// Resolve returns the address (host:port) of the NBD server of the
	// volume's current primary. It is called on every (re)connection.
	Resolve func(ctx context.Context) (addr string, err error)
	// MountDir is the directory holding the FUSE mounts of every volume
	// attached on this node; it is created if missing.
	MountDir string
	// ReadOnly attaches the volume read-only.
	ReadOnly bool
	// BlockSize is the loop device's logical block size: 512, 1024, 2048
	// or 4096. Zero means DefaultBlockSize.
	BlockSize uint32
	// RetryTimeout bounds how long one I/O waits for the primary across
	// reconnections before it fails with EIO. Zero means
	// nbdclient.DefaultRetryTimeout.
	RetryTimeout time.Duration
	// TLS, when set, makes the connections to the primary upgrade with
	// NBD_OPT_STARTTLS and present the frontend's certificate. Nil
	// connects over plain TCP.
	TLS *tls.Config
}

// validate checks the options that need no I/O.
func (o AttachOptions) validate() error {
	switch {
	case o.VolumeID == "" || o.VolumeID == "." || o.VolumeID == ".." || strings.ContainsAny(o.VolumeID, "/\x00"):
		return fmt.Errorf("%w: volume id %q is not a file name", ErrInvalidOptions, o.VolumeID)
	case o.Resolve == nil:
		return fmt.Errorf("%w: no endpoint resolver", ErrInvalidOptions)
	case o.MountDir == "":
		return fmt.Errorf("%w: no mount directory", ErrInvalidOptions)
	case o.BlockSize != 0 && (o.BlockSize < 512 || o.BlockSize > 4096 || o.BlockSize&(o.BlockSize-1) != 0):
		return fmt.Errorf("%w: block size %d", ErrInvalidOptions, o.BlockSize)
	}
	return nil
}

// Attachment is a volume presented as a loop device. It is safe for
// concurrent use.
type Attachment struct {
	volumeID   string
	mountPoint string
	device     string
	directIO   bool
	blockSize  uint32

	mu       sync.Mutex
	client   *nbdclient.Client
	file     *volumeFile
	server   *fuse.Server
	loop     *loopDevice
	detached bool
}

// Attach connects to the volume's primary and presents the volume as a
// loop device. When a step fails, everything done before it is undone.
func Attach(ctx context.Context, opts AttachOptions) (*Attachment, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	a, err := attach(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("attach volume %s: %w", opts.VolumeID, err)
	}
	klog.InfoS("Attached volume", "volume", a.volumeID, "device", a.device, "directIO", a.directIO)
	return a, nil
}

// attach runs the steps of Attach, releasing what it set up on failure.
func attach(ctx context.Context, opts AttachOptions) (*Attachment, error) {
	a := &Attachment{volumeID: opts.VolumeID, blockSize: opts.BlockSize}
	err := a.setUp(ctx, opts)
	if err == nil {
		return a, nil
	}
	if rerr := a.release(); rerr != nil {
		klog.ErrorS(rerr, "Cleaning up after a failed attach", "volume", a.volumeID)
	}
	return nil, err
}

// setUp connects, mounts and binds the loop device, in that order.
func (a *Attachment) setUp(ctx context.Context, opts AttachOptions) error {
	if err := a.connect(ctx, opts); err != nil {
		return err
	}
	if err := a.mount(opts); err != nil {
		return err
	}
	return a.bindLoop(opts)
}

// connect dials the volume's NBD export and checks its size fits the
// block size.
func (a *Attachment) connect(ctx context.Context, opts AttachOptions) error {
	c, err := nbdclient.Dial(ctx, nbdclient.Options{
		Endpoint:     opts.Resolve,
		ExportName:   api.ExportName(opts.VolumeID, opts.Generation),
		RetryTimeout: opts.RetryTimeout,
		TLS:          opts.TLS,
	})
	if err != nil {
		return err
	}
	a.client = c
	if c.Size() <= 0 || c.Size()%int64(opts.BlockSize) != 0 {
		return fmt.Errorf("%w: volume size %d is not a positive multiple of block size %d",
			ErrInvalidOptions, c.Size(), opts.BlockSize)
	}
	if opts.ReadOnly || !c.ReadOnly() {
		return nil
	}
	return fmt.Errorf("%w: the export is read-only", ErrInvalidOptions)
}

// mount creates the mount point and mounts the volume's FUSE file system.
func (a *Attachment) mount(opts AttachOptions) error {
	base, err := canonicalDir(opts.MountDir)
	if err != nil {
		return err
	}
	a.mountPoint = filepath.Join(base, opts.VolumeID)
	if mounted, err := isMountPoint(a.mountPoint); err != nil || mounted {
		if err == nil {
			err = fmt.Errorf("%w: %s is a mount point", ErrAlreadyAttached, a.mountPoint)
		}
		return err
	}
	if err := os.Mkdir(a.mountPoint, 0o700); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create mount point: %w", err)
	}
	file := newVolumeFile(a.volumeID, a.client, a.client.Size(), opts.ReadOnly)
	server, err := mountVolume(a.mountPoint, a.volumeID, file)
	if err != nil {
		os.Remove(a.mountPoint)
		return err
	}
	a.server, a.file = server, file
	return nil
}

// bindLoop opens the volume file and binds a loop device to it.
func (a *Attachment) bindLoop(opts AttachOptions) error {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(filepath.Join(a.mountPoint, FileName), flag, 0)
	if err != nil {
		return fmt.Errorf("open volume file: %w", err)
	}
	defer f.Close() // the loop device keeps its own reference
	l, err := attachLoop(f, opts.ReadOnly, opts.BlockSize)
	if err != nil {
		return err
	}
	a.loop, a.device, a.directIO = l, l.path, l.directIO
	return nil
}

// canonicalDir creates dir if needed and returns its absolute path with
// symbolic links resolved, as the kernel reports paths in /proc and /sys.
func canonicalDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create mount directory: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// Device returns the block device path, such as /dev/loop3.
func (a *Attachment) Device() string { return a.device }

// VolumeID returns the attached volume's id.
func (a *Attachment) VolumeID() string { return a.volumeID }

// DirectIO reports whether the loop device reads and writes the FUSE
// file with direct I/O (asynchronous, several requests at once) rather
// than through buffered file calls.
func (a *Attachment) DirectIO() bool { return a.directIO }

// Detach flushes the device, detaches the loop device, unmounts the FUSE
// file system and disconnects from the primary. It fails with
// ErrDeviceBusy, changing nothing, while the device is mounted. A failed
// Detach can be called again; once it succeeded, Detach returns nil.
func (a *Attachment) Detach(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.detached {
		return nil
	}
	if err := a.detach(ctx); err != nil {
		return fmt.Errorf("detach volume %s: %w", a.volumeID, err)
	}
	a.detached = true
	klog.InfoS("Detached volume", "volume", a.volumeID, "device", a.device)
	return nil
}

// detach runs the steps of Detach. Each step clears its field once
// done, so that a retry resumes where a failure stopped.
func (a *Attachment) detach(ctx context.Context) error {
	if a.loop != nil {
		if err := a.detachLoop(ctx); err != nil {
			return err
		}
		a.loop = nil
	}
	if a.client != nil {
		err := a.client.Flush(ctx)
		switch {
		case fenced(err):
			// A newer attachment fenced this one: no write of it can
			// reach the volume any more, so there is nothing to wait for.
			klog.ErrorS(err, "Final flush refused: the volume is attached elsewhere now", "volume", a.volumeID)
		case err != nil:
			return fmt.Errorf("final flush: %w", err)
		}
	}
	return a.release()
}

// detachLoop flushes and detaches the loop device. When the flush fails
// because the primary fenced this attachment, it detaches without one:
// the flush can never succeed, and unstaging must still clean up.
func (a *Attachment) detachLoop(ctx context.Context) error {
	err := a.loop.detach(ctx, true)
	if err == nil || !errors.Is(err, syscall.EIO) || a.client == nil {
		return err
	}
	if ferr := a.client.Flush(ctx); !fenced(ferr) {
		return err
	}
	klog.ErrorS(err, "Loop device flush failed: the volume is attached elsewhere now", "volume", a.volumeID, "device", a.device)
	return a.loop.detach(ctx, false)
}

// fenced says whether err is the primary refusing this attachment for
// good: by policy at a reconnection, or EPERM on a request.
func fenced(err error) bool {
	return errors.Is(err, nbdclient.ErrForbidden) || errors.Is(err, syscall.EPERM)
}

// release undoes whatever Attach set up, without flushing: the loop
// device, the FUSE mount and the NBD connection.
func (a *Attachment) release() error {
	if a.loop != nil {
		if err := a.loop.detach(context.Background(), true); err != nil {
			return err
		}
		a.loop = nil
	}
	if a.server != nil {
		if err := unmountVolume(a.server, a.mountPoint); err != nil {
			return err
		}
		a.server = nil
		os.Remove(a.mountPoint)
	}
	if a.client != nil {
		a.client.Close()
		a.client = nil
	}
	return nil
}
