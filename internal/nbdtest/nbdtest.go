// Package nbdtest serves, for tests, a volume whose data is a file and
// whose size the test changes, as online expansion changes a volume's:
// one NBD export on 127.0.0.1, served until the test ends.
package nbdtest

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/pkg/nbd"
)

// Volume is an nbd.Export over a file, and the export list that holds it
// alone.
type Volume struct {
	// ID is the export's name; Addr is host:port of its NBD server.
	ID, Addr string

	f    *os.File
	size atomic.Int64
}

// Serve serves a volume of size bytes named id until the test ends.
func Serve(t testing.TB, id string, size int64) *Volume {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "volume"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	v := &Volume{ID: id, f: f}
	v.SetSize(t, size)
	v.Addr = Listen(t, v)
	return v
}

// Listen serves exports over plain NBD on a new port of 127.0.0.1 until
// the test ends, and returns its host:port.
func Listen(t testing.TB, exports nbd.Exports) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.NewServer(exports, nbd.Options{})
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

// SetSize makes the export size bytes long: the file grows when needed,
// and a smaller size stands for an export that shrank.
func (v *Volume) SetSize(t testing.TB, size int64) {
	t.Helper()
	if size > v.size.Load() {
		if err := v.f.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	v.size.Store(size)
}

// Bytes reads the volume's data directly.
func (v *Volume) Bytes(t testing.TB, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := v.f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// Size implements nbd.Export.
func (v *Volume) Size() int64 { return v.size.Load() }

// ReadAt implements nbd.Export.
func (v *Volume) ReadAt(_ context.Context, p []byte, off int64) error {
	_, err := v.f.ReadAt(p, off)
	return err
}

// WriteAt implements nbd.Export.
func (v *Volume) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	_, err := v.f.WriteAt(p, off)
	return err
}

// Flush implements nbd.Export.
func (v *Volume) Flush(context.Context) error { return v.f.Sync() }

// Trim implements nbd.Export.
func (v *Volume) Trim(ctx context.Context, off, length int64) error {
	return v.WriteZeroes(ctx, off, length, false)
}

// WriteZeroes implements nbd.Export.
func (v *Volume) WriteZeroes(_ context.Context, off, length int64, _ bool) error {
	return unix.Fallocate(int(v.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// Lookup implements nbd's export list.
func (v *Volume) Lookup(name string) (nbd.Export, error) {
	if name != v.ID {
		return nil, nbd.ErrNoExport
	}
	return v, nil
}

// List implements nbd's export list.
func (v *Volume) List() []string { return []string{v.ID} }
