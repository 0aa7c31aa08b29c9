package frontend

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// loopControl allocates loop devices. It is a variable so that tests
// can make the last step of Attach fail.
var loopControl = "/dev/loop-control"

// Loop device constants.
const (
	loopMajor       = 7
	maxLoopAttempts = 16 // other processes may grab a free device first
	loopPoll        = 10 * time.Millisecond
	// unbindTimeout bounds the wait for the kernel to release a loop
	// device after LOOP_CLR_FD; short-lived openers such as udev's
	// probes delay it.
	unbindTimeout = 5 * time.Second
)

// loopDevice is a loop device bound to a volume file.
type loopDevice struct {
	index    int
	path     string // /dev/loopN
	backing  string // the backing file, as sysfs names it
	directIO bool
	// file keeps the device open while attached: with autoclear set the
	// kernel unbinds the device when its last user closes it.
	file *os.File
}

// attachLoop binds a free loop device to backing, with autoclear, and
// with direct I/O when the kernel allows it on the backing file.
func attachLoop(backing *os.File, readOnly bool, blockSize uint32) (*loopDevice, error) {
	ctl, err := os.OpenFile(loopControl, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoFreeLoop, err)
	}
	defer ctl.Close()
	for range maxLoopAttempts {
		index, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("%w: LOOP_CTL_GET_FREE: %w", ErrNoFreeLoop, err)
		}
		l, err := bindLoop(index, backing, readOnly, blockSize)
		if errors.Is(err, unix.EBUSY) {
			continue
		}
		return l, err
	}
	return nil, fmt.Errorf("%w: every free device was taken by another process", ErrNoFreeLoop)
}

// bindLoop binds loop device index to backing. EBUSY means another
// process bound it first.
func bindLoop(index int, backing *os.File, readOnly bool, blockSize uint32) (*loopDevice, error) {
	f, err := openLoop(index)
	if err != nil {
		return nil, err
	}
	if err := configureLoop(f, backing, readOnly, blockSize); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind %s: %w", f.Name(), err)
	}
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err != nil {
		clearLoop(f)
		f.Close()
		return nil, fmt.Errorf("bind %s: LOOP_GET_STATUS64: %w", f.Name(), err)
	}
	return &loopDevice{
		index: index, path: f.Name(), backing: backing.Name(), file: f,
		directIO: info.Flags&unix.LO_FLAGS_DIRECT_IO != 0,
	}, nil
}

// openLoop opens /dev/loopN, creating the node where no devtmpfs did.
func openLoop(index int) (*os.File, error) {
	path := fmt.Sprintf("/dev/loop%d", index)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(loopMajor, uint32(index)))); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return f, nil
}

// configureLoop binds the device with LOOP_CONFIGURE, asking for direct
// I/O first and falling back without it, and to the older ioctls on
// kernels before 5.8, which lack LOOP_CONFIGURE.
func configureLoop(dev, backing *os.File, readOnly bool, blockSize uint32) error {
	flags := uint32(unix.LO_FLAGS_AUTOCLEAR)
	if readOnly {
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	err := loopConfigure(dev, backing, flags|unix.LO_FLAGS_DIRECT_IO, blockSize)
	if errors.Is(err, unix.EINVAL) {
		err = loopConfigure(dev, backing, flags, blockSize)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
		err = loopSetFD(dev, backing, blockSize)
	}
	return err
}

// loopConfigure binds and configures the device in one ioctl.
func loopConfigure(dev, backing *os.File, flags, blockSize uint32) error {
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Size: blockSize}
	cfg.Info.Flags = flags
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], backing.Name())
	return unix.IoctlLoopConfigure(int(dev.Fd()), &cfg)
}

// loopSetFD binds the device with the ioctls that predate LOOP_CONFIGURE.
// Read-only follows the mode backing was opened with. Block size and
// direct I/O are best effort.
func loopSetFD(dev, backing *os.File, blockSize uint32) error {
	fd := int(dev.Fd())
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}
	copy(info.File_name[:len(info.File_name)-1], backing.Name())
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		clearLoop(dev)
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	_ = unix.IoctlSetInt(fd, unix.LOOP_SET_BLOCK_SIZE, int(blockSize))
	_ = unix.IoctlSetInt(fd, unix.LOOP_SET_DIRECT_IO, 1)
	return nil
}

// setCapacity makes the kernel size the device again from its backing
// file (LOOP_SET_CAPACITY).
func (l *loopDevice) setCapacity() error {
	if err := unix.IoctlSetInt(int(l.file.Fd()), unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", l.path, err)
	}
	return nil
}

// size returns the device's size in bytes, as the kernel sees it
// (BLKGETSIZE64).
func (l *loopDevice) size() (int64, error) {
	size, err := unix.IoctlGetUint64(int(l.file.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return 0, fmt.Errorf("BLKGETSIZE64 %s: %w", l.path, err)
	}
	return int64(size), nil
}

// clearLoop unbinds the device; with other users it only marks it to be
// unbound when the last one closes it.
func clearLoop(dev *os.File) error {
	err := unix.IoctlSetInt(int(dev.Fd()), unix.LOOP_CLR_FD, 0)
	if errors.Is(err, unix.ENXIO) { // already unbound
		return nil
	}
	return err
}

// detach flushes the device, unless flush is false, and unbinds it, then
// waits until the kernel has let go of the backing file. It fails with
// ErrDeviceBusy, before touching anything, while the device is mounted or
// opened exclusively.
func (l *loopDevice) detach(ctx context.Context, flush bool) error {
	if l.file != nil {
		if err := l.unbind(flush); err != nil {
			return err
		}
	}
	return l.waitUnbound(ctx)
}

// unbind flushes (if asked) and clears the device and closes it.
func (l *loopDevice) unbind(flush bool) error {
	if err := checkNotClaimed(l.path); err != nil {
		return err
	}
	if flush {
		if err := l.file.Sync(); err != nil {
			return fmt.Errorf("flush %s: %w", l.path, err)
		}
	}
	if err := clearLoop(l.file); err != nil {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", l.path, err)
	}
	l.file.Close()
	l.file = nil
	return nil
}

// checkNotClaimed fails with ErrDeviceBusy when a filesystem or another
// exclusive user holds the device.
func checkNotClaimed(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("%w: %s is mounted or held by another program", ErrDeviceBusy, path)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	return unix.Close(fd)
}

// waitUnbound waits until the device no longer uses the backing file.
func (l *loopDevice) waitUnbound(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, unbindTimeout)
	defer cancel()
	for {
		if backing, bound := loopBacking(l.index); !bound || backing != l.backing {
			return nil
		}
		select {
		case <-time.After(loopPoll):
		case <-ctx.Done():
			return fmt.Errorf("%w: %s is still open; it is unbound when its last user closes it", ErrDeviceBusy, l.path)
		}
	}
}

// loopBacking returns the backing file of loop device index, as sysfs
// shows it, and whether the device is bound.
func loopBacking(index int) (string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", index))
	if err != nil {
		return "", false
	}
	return strings.TrimSuffix(string(b), "\n"), true
}
