package localcluster

import (
	"context"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/trireme-csi/trireme/pkg/api"
)

// TestSystemRegistersEveryNode starts a controller and four nodes in
// three zones: each zone's capacity counts all its nodes, each node's
// CSI socket reports its id and zone, and Stop ends every process.
func TestSystemRegistersEveryNode(t *testing.T) {
	bin, err := buildTrireme()
	if err != nil {
		t.Fatal(err)
	}
	specs, err := Spread(4, 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := StartSystem(ctx, SystemOptions{Binary: bin, Dir: t.TempDir(), Nodes: specs, NodeCapacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.Stop()
		}
	})

	for zone, want := range map[string]int64{"zone-a": 2 << 30, "zone-b": 1 << 30, "zone-c": 1 << 30} {
		if got, err := s.ZoneCapacity(ctx, zone); err != nil || got != want {
			t.Errorf("ZoneCapacity(%s) = %d, %v; want %d", zone, got, err, want)
		}
	}
	for _, n := range s.Nodes {
		info, err := csipb.NewNodeClient(n.CSIConn).NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
		if err != nil {
			t.Fatalf("NodeGetInfo on %s: %v", n.ID, err)
		}
		if info.GetNodeId() != n.ID || info.GetAccessibleTopology().GetSegments()[api.ZoneTopologyKey] != n.Zone {
			t.Errorf("NodeGetInfo on %s = %v", n.ID, info)
		}
	}

	stopped = true
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	for _, n := range s.Nodes {
		select {
		case <-n.Exited():
		default:
			t.Errorf("%s still runs", n.ID)
		}
	}
}
