package localcluster

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// TestStragglersNamesProcessesThatUseTheDirectory finds a process whose
// command line names a path below the directory, and forgets it once it
// has exited.
func TestStragglersNamesProcessesThatUseTheDirectory(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", "sleep 30", filepath.Join(dir, "kubelet", "globalmount"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(cmd.Process.Pid)
	found := func() bool {
		for _, s := range Stragglers(dir) {
			if strings.HasPrefix(s, pid+" sh -c sleep 30 ") {
				return true
			}
		}
		return false
	}
	if !found() {
		t.Errorf("Stragglers(%s) = %q, lacks pid %s", dir, Stragglers(dir), pid)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if found() {
		t.Errorf("Stragglers still lists pid %s after it exited", pid)
	}
	if got := Stragglers(t.TempDir()); len(got) != 0 {
		t.Errorf("Stragglers of an unused directory = %q", got)
	}
}
