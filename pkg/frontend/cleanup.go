package frontend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// Cleanup removes what attachments under mountDir left behind when their
// agent died: it unbinds loop devices backed by files under mountDir and
// lazily unmounts volume FUSE mounts there. A loop device that is still
// mounted cannot be unbound at once; it is unbound when it is unmounted,
// and Cleanup reports it with ErrDeviceBusy.
//
// Cleanup must run before this process attaches anything under
// mountDir: it cannot tell a live attachment from a leftover one.
func Cleanup(mountDir string) error {
	dir, err := filepath.Abs(mountDir)
	if err != nil {
		return fmt.Errorf("clean up %s: %w", mountDir, err)
	}
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	loopErr := cleanupLoops(dir)
	mountErr := cleanupMounts(dir)
	if err := errors.Join(loopErr, mountErr); err != nil {
		return fmt.Errorf("clean up %s: %w", dir, err)
	}
	return nil
}

// cleanupLoops unbinds every loop device whose backing file is under dir.
func cleanupLoops(dir string) error {
	var errs []error
	for _, index := range loopIndexes() {
		backing, bound := loopBacking(index)
		if !bound || !isUnder(backing, dir) {
			continue
		}
		l := &loopDevice{index: index, path: fmt.Sprintf("/dev/loop%d", index), backing: backing}
		if err := unbindLeftover(l); err != nil {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Unbound leftover loop device", "device", l.path, "file", backing)
	}
	return errors.Join(errs...)
}

// unbindLeftover clears a leftover loop device, marked autoclear or not.
// Its data cannot be flushed: the FUSE server behind it is gone.
func unbindLeftover(l *loopDevice) error {
	f, err := os.OpenFile(l.path, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", l.path, err)
	}
	defer f.Close()
	info, err := unix.IoctlLoopGetStatus64(int(f.Fd()))
	if err == nil && info.Flags&unix.LO_FLAGS_AUTOCLEAR == 0 {
		info.Flags |= unix.LO_FLAGS_AUTOCLEAR
		_ = unix.IoctlLoopSetStatus64(int(f.Fd()), info)
	}
	if err := clearLoop(f); err != nil {
		return fmt.Errorf("LOOP_CLR_FD %s: %w", l.path, err)
	}
	f.Close()
	if backing, bound := loopBacking(l.index); bound && backing == l.backing {
		return fmt.Errorf("%w: %s is still mounted; it is unbound when unmounted", ErrDeviceBusy, l.path)
	}
	return nil
}

// loopIndexes lists the loop devices sysfs knows.
func loopIndexes() []int {
	entries, _ := os.ReadDir("/sys/block")
	var indexes []int
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "loop"); ok {
			if i, err := strconv.Atoi(n); err == nil {
				indexes = append(indexes, i)
			}
		}
	}
	return indexes
}

// cleanupMounts aborts and lazily unmounts every volume FUSE mount under
// dir, and removes the emptied mount points.
func cleanupMounts(dir string) error {
	mounts, err := volumeMounts(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		abortConnection(m)
		if err := unix.Unmount(m.point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m.point, err))
			continue
		}
		os.Remove(m.point)
		klog.InfoS("Unmounted leftover volume file system", "path", m.point)
	}
	return errors.Join(errs...)
}
