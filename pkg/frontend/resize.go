package frontend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"
)

// Attribute refresh settings of Resize: the kernel drops a size it
// fetched while a write was changing the file's attributes, so the
// refresh is tried again for a while.
const (
	attrRefreshTimeout = 5 * time.Second
	attrRefreshPoll    = 10 * time.Millisecond
)

// Resize makes the device follow a volume that grew: it asks the
// primary for the volume's size, grows the FUSE file, makes the kernel
// see the file's new size, and grows the loop device with
// LOOP_SET_CAPACITY. It returns the device's size, as BLKGETSIZE64
// reports it. When the volume did not grow, it changes nothing and
// returns the current size. A volume found smaller than the device
// fails with nbdclient.ErrSizeChanged. The filesystem on the device is
// not touched: growing it is the caller's business.
func (a *Attachment) Resize(ctx context.Context) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.detached || a.loop == nil || a.loop.file == nil {
		return 0, fmt.Errorf("resize volume %s: %w", a.volumeID, ErrDetached)
	}
	size, err := a.resize(ctx)
	if err != nil {
		return 0, fmt.Errorf("resize volume %s: %w", a.volumeID, err)
	}
	return size, nil
}

// resize runs the steps of Resize.
func (a *Attachment) resize(ctx context.Context) (int64, error) {
	size, err := a.client.RefreshSize(ctx)
	if err != nil {
		return 0, err
	}
	if size%int64(a.blockSize) != 0 {
		return 0, fmt.Errorf("%w: volume size %d is not a multiple of block size %d", ErrResize, size, a.blockSize)
	}
	old, err := a.loop.size()
	if err != nil || old >= size {
		return old, err
	}
	a.file.grow(size)
	if err := a.refreshFileSize(ctx, size); err != nil {
		return 0, err
	}
	if err := a.loop.setCapacity(); err != nil {
		return 0, err
	}
	got, err := a.loop.size()
	if err != nil {
		return 0, err
	}
	if got != size {
		return 0, fmt.Errorf("%w: %s is %d bytes after LOOP_SET_CAPACITY, want %d", ErrResize, a.device, got, size)
	}
	klog.InfoS("Grew volume device", "volume", a.volumeID, "device", a.device, "oldSize", old, "size", size)
	return got, nil
}

// refreshFileSize makes the kernel see the FUSE file's size: it
// invalidates the file's cached attributes and stats the file, which
// fetches them again, until the kernel reports size. The loop device
// reads its size from the kernel's inode.
func (a *Attachment) refreshFileSize(ctx context.Context, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, attrRefreshTimeout)
	defer cancel()
	path := filepath.Join(a.mountPoint, FileName)
	for {
		// Offset -1 invalidates the attributes only, not cached data.
		if errno := a.file.NotifyContent(-1, 0); errno != 0 {
			return fmt.Errorf("%w: invalidate attributes of %s: %w", ErrResize, path, errno)
		}
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrResize, err)
		}
		if fi.Size() == size {
			return nil
		}
		select {
		case <-time.After(attrRefreshPoll):
		case <-ctx.Done():
			return fmt.Errorf("%w: the kernel still sees %s as %d bytes, not %d", ErrResize, path, fi.Size(), size)
		}
	}
}
