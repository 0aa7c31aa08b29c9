package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// growingExport is a memExport that reports a size below its capacity,
// which the test changes as a volume's size changes.
type growingExport struct {
	*memExport
	size atomic.Int64
}

func (g *growingExport) Size() int64 { return g.size.Load() }

// newGrowingExport returns an export of size bytes that can grow to
// exportSize.
func newGrowingExport(size int64) *growingExport {
	g := &growingExport{memExport: newMemExport(exportSize)}
	g.size.Store(size)
	return g
}

func TestRefreshSizeFollowsAGrownExport(t *testing.T) {
	const small = exportSize / 2
	exp := newGrowingExport(small)
	c := dial(t, startServer(t, exports{exportName: exp}), 5*time.Second)
	ctx := context.Background()
	data := pattern(64<<10, 3)
	if err := c.WriteAt(ctx, data, small, false); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end before growing: %v, want ErrOutOfRange", err)
	}

	for _, want := range []int64{small, exportSize, exportSize} { // unchanged, grown, again
		exp.size.Store(want)
		got, err := c.RefreshSize(ctx)
		if err != nil || got != want || c.Size() != want {
			t.Fatalf("RefreshSize = %d, %v; Size = %d; want %d", got, err, c.Size(), want)
		}
	}
	if err := c.WriteAt(ctx, data, small, false); err != nil {
		t.Fatalf("write to the grown range: %v", err)
	}
	if got := exp.bytes(small, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the export does not hold the write to the grown range")
	}
}

func TestRefreshSizeRefusesAShrunkExport(t *testing.T) {
	exp := newGrowingExport(exportSize)
	c := dial(t, startServer(t, exports{exportName: exp}), 5*time.Second)
	exp.size.Store(exportSize / 2)
	if _, err := c.RefreshSize(context.Background()); !errors.Is(err, ErrSizeChanged) {
		t.Fatalf("RefreshSize of a shrunk export: %v, want ErrSizeChanged", err)
	}
	if got := c.Size(); got != exportSize {
		t.Errorf("Size after a refused refresh = %d, want %d", got, exportSize)
	}
}

func TestRefreshSizeFailsWhenTheServerIsGone(t *testing.T) {
	exp := newGrowingExport(exportSize / 2)
	srv := startServer(t, exports{exportName: exp})
	c := dial(t, srv, 5*time.Second)
	srv.stop()
	exp.size.Store(exportSize)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.RefreshSize(ctx); err == nil {
		t.Fatal("RefreshSize without a server succeeded")
	}
	if got := c.Size(); got != exportSize/2 {
		t.Errorf("Size after a failed refresh = %d, want %d", got, exportSize/2)
	}
	c.Close()
	if _, err := c.RefreshSize(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("RefreshSize after Close: %v, want ErrClosed", err)
	}
}
