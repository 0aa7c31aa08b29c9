package localcluster

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"
)

// TestKillZoneKillsEveryNodeOfTheZoneOnly loses zone-a of a four-node
// cluster: both of its node processes are gone, the other zones' nodes
// still answer, and losing the zone again is an error.
func TestKillZoneKillsEveryNodeOfTheZoneOnly(t *testing.T) {
	bin, err := buildTrireme()
	if err != nil {
		t.Fatal(err)
	}
	specs, err := Spread(4, 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := Start(ctx, Options{Binary: bin, Dir: t.TempDir()}, specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)

	k, err := c.KillZone("zone-a")
	if err != nil {
		t.Fatal(err)
	}
	if got := nodeIDs(k.Nodes); !slices.Equal(got, []string{"node-a1", "node-a2"}) {
		t.Errorf("killed %v, want node-a1 and node-a2", got)
	}
	if k.Gone.Before(k.Sent) {
		t.Errorf("Gone %v is before Sent %v", k.Gone, k.Sent)
	}
	for _, n := range k.Nodes {
		if err := syscall.Kill(n.PID(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists: kill 0 = %v", n.ID, n.PID(), err)
		}
	}
	if got := nodeIDs(c.LiveNodes()); !slices.Equal(got, []string{"node-b1", "node-c1"}) {
		t.Errorf("live nodes %v, want node-b1 and node-c1", got)
	}
	for _, n := range c.LiveNodes() {
		if err := n.waitReady(ctx); err != nil {
			t.Errorf("%s after zone-a was lost: %v", n.ID, err)
		}
	}
	if _, err := c.KillZone("zone-a"); err == nil {
		t.Errorf("killing zone-a a second time succeeded")
	}
}

func nodeIDs(nodes []*Node) []string {
	var ids []string
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	return ids
}
