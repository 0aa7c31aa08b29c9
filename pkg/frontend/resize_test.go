package frontend

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/internal/nbdtest"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
)

// attachGrowable attaches v and detaches it when the test ends.
func attachGrowable(t *testing.T, v *nbdtest.Volume) *Attachment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, err := Attach(ctx, AttachOptions{VolumeID: v.ID, Resolve: func(context.Context) (string, error) { return v.Addr, nil }, MountDir: mountDir(t),
		RetryTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("Attach: %v", err)
	}
	t.Cleanup(func() { detach(t, a) })
	return a
}

// deviceSize opens path afresh and returns its BLKGETSIZE64.
func deviceSize(t *testing.T, path string) int64 {
	t.Helper()
	fd := openDevice(t, path, unix.O_RDONLY)
	size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
	if err != nil {
		t.Fatalf("BLKGETSIZE64 %s: %v", path, err)
	}
	return int64(size)
}

// resize calls a.Resize and checks the size it returns, the device's
// and the FUSE file's, as the kernel reports them.
func resize(t *testing.T, a *Attachment, want int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := a.Resize(ctx)
	if err != nil || got != want {
		t.Fatalf("Resize = %d, %v; want %d", got, err, want)
	}
	if got := deviceSize(t, a.Device()); got != want {
		t.Errorf("BLKGETSIZE64 after Resize = %d, want %d", got, want)
	}
	fi, err := os.Stat(filepath.Join(a.mountPoint, FileName))
	if err != nil || fi.Size() != want {
		t.Errorf("FUSE file after Resize: %v, %v; want %d bytes", fi, err, want)
	}
}

func TestResizeGrowsTheDeviceAndKeepsItsData(t *testing.T) {
	requireKernel(t)
	const small, large = 32 << 20, 96 << 20
	v := nbdtest.Serve(t, "vol-grow", small)
	a := attachGrowable(t, v)
	fd := openDevice(t, a.Device(), unix.O_RDWR|unix.O_DIRECT)
	old := alignedBuffer(t, pattern(1<<20, 5))
	pwrite(t, fd, old, small-1<<20)

	resize(t, a, small) // nothing grew: nothing changes

	v.SetSize(t, large)
	resize(t, a, large)
	resize(t, a, large) // idempotent

	grown := alignedBuffer(t, pattern(1<<20, 9))
	pwrite(t, fd, grown, large-1<<20)
	if err := unix.Fsync(fd); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.Bytes(t, large-1<<20, len(grown)), grown) {
		t.Error("the export does not hold the write to the grown end of the device")
	}
	got := alignedBuffer(t, make([]byte, len(old)))
	pread(t, fd, got, small-1<<20)
	if !bytes.Equal(got, old) {
		t.Error("data written before the resize reads back changed")
	}
}

func TestResizeRefusesAShrunkVolume(t *testing.T) {
	requireKernel(t)
	const size = 32 << 20
	v := nbdtest.Serve(t, "vol-shrink", size)
	a := attachGrowable(t, v)
	v.SetSize(t, size/2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := a.Resize(ctx); !errors.Is(err, nbdclient.ErrSizeChanged) {
		t.Fatalf("Resize of a shrunk volume: %v, want ErrSizeChanged", err)
	}
	if got := deviceSize(t, a.Device()); got != size {
		t.Errorf("device size after a refused Resize = %d, want %d", got, size)
	}
}

func TestResizeAfterDetachFails(t *testing.T) {
	requireKernel(t)
	v := nbdtest.Serve(t, "vol-detached", 32<<20)
	a := attachGrowable(t, v)
	detach(t, a)
	if _, err := a.Resize(context.Background()); !errors.Is(err, ErrDetached) {
		t.Fatalf("Resize after Detach: %v, want ErrDetached", err)
	}
}

func TestResizeWhileTheDeviceIsWritten(t *testing.T) {
	requireKernel(t)
	const step = 16 << 20
	v := nbdtest.Serve(t, "vol-busy", step)
	a := attachGrowable(t, v)
	fd := openDevice(t, a.Device(), unix.O_RDWR|unix.O_DIRECT)
	buf := alignedBuffer(t, pattern(64<<10, 3))

	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := int64(0); ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := unix.Pwrite(fd, buf, i*int64(len(buf))%step); err != nil {
				done <- err
				return
			}
		}
	}()
	for size := int64(2 * step); size <= 5*step; size += step {
		v.SetSize(t, size)
		resize(t, a, size)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Errorf("write during Resize: %v", err)
	}
}
