package localcluster

import (
	"github.com/trireme-csi/trireme/internal/testenv"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"

	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// buildTrireme compiles the trireme binary once for the package's tests.
var buildTrireme = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "trireme-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "trireme")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/trireme-csi/trireme/cmd/trireme").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build trireme: %v\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := buildTrireme(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	testenv.Require(t, tools...)
}

func startThreeZones(t *testing.T) *Cluster {
	t.Helper()
	bin, err := buildTrireme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{Binary: bin, Dir: t.TempDir()}, ThreeZones)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// clientScript is one qemu-io client's random requests inside its own
// region, with the bytes they leave applied to model.
func clientScript(rng *rand.Rand, model []byte, regionOff, regionLen int64, ops int) []string {
	var args []string
	for range ops {
		n := 1 + rng.Int64N(12000)
		off := regionOff + rng.Int64N(regionLen-n)
		switch k := rng.IntN(10); {
		case k == 0:
			args = append(args, "-c", "flush")
		case k == 1:
			args = append(args, "-c", fmt.Sprintf("discard %d %d", off, n))
			clear(model[off : off+n])
		case k == 2:
			args = append(args, "-c", fmt.Sprintf("write -z %d %d", off, n))
			clear(model[off : off+n])
		default:
			pattern := byte(1 + rng.IntN(255))
			fua := ""
			if k == 3 {
				fua = "-f "
			}
			args = append(args, "-c", fmt.Sprintf("write %s-P %d %d %d", fua, pattern, off, n))
			for i := off; i < off+n; i++ {
				model[i] = pattern
			}
		}
	}
	return args
}

// TestConcurrentNBDClientsLeaveIdenticalReplicas drives a 3-replica
// volume with several real NBD clients at once, each issuing unaligned
// writes, zeroes, discards, FUA writes and flushes, then compares every
// replica's data file with the others and with the model of what the
// clients were acknowledged.
func TestConcurrentNBDClientsLeaveIdenticalReplicas(t *testing.T) {
	requireTools(t, "qemu-io")
	c := startThreeZones(t)
	const size, clients = 16 << 20, 4
	ctx := context.Background()
	if _, err := c.CreateVolume(ctx, "vol-model", size, "node-a", "node-b", "node-c"); err != nil {
		t.Fatal(err)
	}
	open := c.Node("node-a").QemuIOArgs("vol-model")
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(42, 7))
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		region := int64(size / clients)
		args := append(slices.Clone(open), clientScript(rng, model, int64(i)*region, region, 150)...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := exec.Command("qemu-io", args...).CombinedOutput(); err != nil ||
				strings.Contains(string(out), "failed") {
				errs <- fmt.Errorf("client %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	for _, n := range c.Nodes {
		got, err := os.ReadFile(filepath.Join(n.DataDir, "volumes", "vol-model", "data"))
		if err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(got, model); i >= 0 {
			t.Errorf("replica on %s differs from the acknowledged data at byte %d", n.ID, i)
		}
	}
	sums, err := c.Checksums(ctx, "vol-model", "node-a", "node-b", "node-c")
	if err != nil {
		t.Fatal(err)
	}
	if sums["node-a"] != sums["node-b"] || sums["node-a"] != sums["node-c"] {
		t.Fatalf("replica checksums differ: %v", sums)
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestInsecureClusterSpeaksPlainProtocols: with Options.Insecure the
// nodes run with --insecure, the harness reaches their APIs without
// certificates, and the NBD URI is a plain one that libnbd clients which
// cannot present a certificate (fio's nbd engine) can use.
func TestInsecureClusterSpeaksPlainProtocols(t *testing.T) {
	requireTools(t, "root", "nbdinfo")
	bin, err := buildTrireme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(context.Background(), Options{Binary: bin, Dir: t.TempDir(), Insecure: true}, ThreeZones[:1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	n := c.Node("node-a")
	if _, err := n.Client.CreateReplica(context.Background(), &apiv1.CreateReplicaRequest{VolumeId: "vol-plain", SizeBytes: 1 << 20}); err != nil {
		t.Fatalf("CreateReplica over a plain connection: %v", err)
	}
	if _, err := n.Client.SetLayout(context.Background(), &apiv1.SetLayoutRequest{Layout: &apiv1.Layout{
		VolumeId: "vol-plain", SizeBytes: 1 << 20, Epoch: 1, Primary: "node-a",
		Replicas: []*apiv1.ReplicaInfo{{NodeId: "node-a", Address: n.ReplicationAddr, State: apiv1.ReplicaState_REPLICA_STATE_IN_SYNC}},
	}}); err != nil {
		t.Fatalf("SetLayout: %v", err)
	}
	uri := n.NBDURI("vol-plain")
	if !strings.HasPrefix(uri, "nbd://") {
		t.Fatalf("NBD URI %q, want a plain nbd:// one", uri)
	}
	out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1048576" {
		t.Errorf("nbdinfo --size %s: %q, %v", uri, out, err)
	}
}
