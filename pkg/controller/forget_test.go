package controller

import (
	"context"
	"testing"
	"time"
)

// A deleted volume leaves nothing in the controller's repair state, and
// another volume's state stays: over months of volumes created and
// deleted, that state would otherwise only grow.
func TestDeleteVolumeForgetsItsRepairState(t *testing.T) {
	c, st, _ := newRepairController(t)
	ctx := context.Background()
	// Registered first: a registration drops the confirmations of the
	// volumes the node is primary of.
	if err := c.RegisterNode(ctx, Registration{NodeID: "a", DataAddress: "a:1", APIAddress: "a:2", NBDAddress: "a:3"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vol-1", "vol-2"} {
		createTestVolume(t, st, id, "a")
		c.markReady(id)
		c.mu.Lock()
		c.confirmedEpochs[id] = confirmation{epoch: 1, primary: "a"}
		c.faultedAt[replicaKey{id, "b"}] = time.Now()
		c.resumedAt[replicaKey{id, "b"}] = time.Now()
		c.mu.Unlock()
		c.logOnce(id, "no-room", "test condition")
	}
	if err := c.DeleteVolume(ctx, "vol-1"); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	count := func(id string) (n int) {
		if c.ready[id] {
			n++
		}
		if _, ok := c.confirmedEpochs[id]; ok {
			n++
		}
		for _, m := range []map[replicaKey]bool{c.logged} {
			for k := range m {
				if k.volume == id {
					n++
				}
			}
		}
		for _, m := range []map[replicaKey]time.Time{c.faultedAt, c.resumedAt} {
			for k := range m {
				if k.volume == id {
					n++
				}
			}
		}
		return n
	}
	if n := count("vol-1"); n != 0 {
		t.Errorf("the deleted volume left %d entries in the repair state", n)
	}
	if n := count("vol-2"); n != 5 {
		t.Errorf("the other volume has %d entries, want its 5", n)
	}
}
