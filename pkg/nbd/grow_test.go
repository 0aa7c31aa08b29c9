package nbd

import (
	"bytes"
	"sync/atomic"
	"testing"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// growingExport is a memExport whose reported size starts below its
// capacity and grows on demand, as a volume does under online expansion.
type growingExport struct {
	*memExport
	size atomic.Int64
}

func (g *growingExport) Size() int64 { return g.size.Load() }

func TestGrownExportAcceptsTheNewRangeOnAnOpenConnection(t *testing.T) {
	const small = testSize / 2
	exp := &growingExport{memExport: newMemExport(testSize)}
	exp.size.Store(small)
	addr, _ := startServer(t, memExports{"vol": exp}, Options{})
	c := dial(t, addr)
	c.connect("vol")
	data := pattern(4096, 7)

	c.send(nbdwire.CmdWrite, 0, 1, small, uint32(len(data)), data)
	c.expectReply(1, errnoNoSpace)
	if n := exp.calls(); n != 0 {
		t.Fatalf("export saw %d calls before it grew, want 0", n)
	}

	exp.size.Store(testSize)
	c.send(nbdwire.CmdWrite, 0, 2, small, uint32(len(data)), data)
	c.expectReply(2, 0)
	if got := c.readAt(3, small, uint32(len(data))); !bytes.Equal(got, data) {
		t.Errorf("read back from the grown range differs from the write")
	}
	c.send(nbdwire.CmdRead, 0, 4, testSize-512, 1024, nil)
	c.expectReply(4, errnoInval)
	exp.checkIntact(t)
}
