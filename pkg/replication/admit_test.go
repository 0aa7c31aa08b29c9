package replication

import (
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// TestAdmitGuardsEveryEpochAConnectionReaches: Admit is asked at the hello
// and again for the first frame of each higher epoch. A refused hello
// binds nothing and leaves the replica's epoch; a refused frame is not
// applied, and the connection closes.
func TestAdmitGuardsEveryEpochAConnectionReaches(t *testing.T) {
	n := &testNode{id: "a", zone: "zone-a", dir: t.TempDir(), replicas: map[string]*blockstore.Replica{}}
	var mu sync.Mutex
	var asked []uint64
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.lis, n.addr = lis, lis.Addr().String()
	n.srv = NewServer(n, ServerOptions{NodeID: "a", Admit: func(peer, volume string, epoch uint64) error {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, epoch)
		if peer != "" || volume != vol {
			t.Errorf("Admit(%q, %q, %d): want no peer (no TLS) and %s", peer, volume, epoch, vol)
		}
		if epoch > 5 {
			return errors.New("not the primary at that epoch")
		}
		return nil
	}})
	go n.srv.Serve(lis)
	t.Cleanup(n.stop)
	r := n.create(t, vol, 1<<20)

	c, br := dialRaw(t, n)
	if got := roundTrip(t, c, br, hello(9)); got.Status != StatusForbidden {
		t.Fatalf("hello at epoch 9: status %d, want %d", got.Status, StatusForbidden)
	}
	if r.Epoch() != 0 {
		t.Fatalf("a refused hello raised the replica's epoch to %d", r.Epoch())
	}

	c, br = dialRaw(t, n)
	if got := roundTrip(t, c, br, hello(3)); got.Status != StatusOK {
		t.Fatalf("hello at epoch 3: status %d", got.Status)
	}
	write := func(id, epoch uint64) Frame {
		return Frame{Op: OpWrite, ID: id, Epoch: epoch, Offset: 0, Length: 4096, Payload: make([]byte, 4096)}
	}
	if got := roundTrip(t, c, br, write(2, 3)); got.Status != StatusOK {
		t.Fatalf("write at epoch 3: status %d", got.Status)
	}
	if got := roundTrip(t, c, br, write(3, 5)); got.Status != StatusOK {
		t.Fatalf("write at epoch 5: status %d", got.Status)
	}
	if got := roundTrip(t, c, br, write(4, 9)); got.Status != StatusForbidden {
		t.Fatalf("write at epoch 9: status %d, want %d", got.Status, StatusForbidden)
	}
	if _, err := ReadFrame(br); !errors.Is(err, io.EOF) {
		t.Errorf("after a refused frame the connection stays open: %v", err)
	}
	if r.Epoch() != 5 {
		t.Errorf("replica at epoch %d, want 5", r.Epoch())
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{9, 3, 5, 9}; !slices.Equal(asked, want) {
		t.Errorf("Admit asked for epochs %v, want %v (once per new epoch)", asked, want)
	}
}
