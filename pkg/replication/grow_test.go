package replication

import (
	"bytes"
	"errors"
	"testing"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// TestGrowUnderALayout: a primary serves the layout's size, not its
// replica's; a layout with a larger size, once every replica has grown,
// opens the new range on every replica, and a smaller one is refused.
func TestGrowUnderALayout(t *testing.T) {
	a, b, c := threeZones(t)
	const size, grown = 1 << 20, 4 << 20
	ra, rb, rc := a.create(t, vol, size), b.create(t, vol, size), c.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync), c.info(InSync))
	p := startPrimary(t, ra, l, PrimaryOptions{NodeID: "a"})
	ctx := t.Context()

	before := bytes.Repeat([]byte{0x5a}, 4096)
	must(t, p.WriteAt(ctx, before, size-4096, false))

	// Growing the local replica alone changes nothing a client sees.
	must(t, ra.Grow(grown))
	if p.Size() != size {
		t.Fatalf("primary size %d after its replica grew, want the layout's %d", p.Size(), size)
	}
	if err := p.WriteAt(ctx, before, size, false); !errors.Is(err, blockstore.ErrOutOfRange) {
		t.Fatalf("write past the layout's size: %v, want ErrOutOfRange", err)
	}

	must(t, rb.Grow(grown))
	must(t, rc.Grow(grown))
	next := l
	next.Epoch, next.Size = 2, grown
	must(t, p.UpdateLayout(next))
	if p.Size() != grown {
		t.Fatalf("primary size %d, want %d", p.Size(), grown)
	}
	after := bytes.Repeat([]byte{0xc3}, 8192)
	must(t, p.WriteAt(ctx, after, grown-8192, true))
	must(t, p.Flush(ctx))

	want := make([]byte, grown)
	copy(want[size-4096:], before)
	copy(want[grown-8192:], after)
	requireIdentical(t, want, ra, rb, rc)

	smaller := next
	smaller.Epoch, smaller.Size = 3, size
	if err := p.UpdateLayout(smaller); !errors.Is(err, ErrInvalidLayout) {
		t.Errorf("layout that shrinks the volume: %v, want ErrInvalidLayout", err)
	}
	larger := next
	larger.Epoch, larger.Size = 3, 2*grown
	if err := p.UpdateLayout(larger); !errors.Is(err, ErrInvalidLayout) {
		t.Errorf("layout larger than the primary's replica: %v, want ErrInvalidLayout", err)
	}
}
