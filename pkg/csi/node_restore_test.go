package csi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
)

// Environment of the helper process TestNodeKernelRestore starts: it
// plays an agent that stages and publishes a volume, then dies.
const (
	helperDirEnv  = "TRIREME_TEST_NODE_DIR"
	helperAddrEnv = "TRIREME_TEST_NODE_NBD"
	helperReady   = "published"
)

// TestMain runs the helper process when asked to, and the tests
// otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDirEnv); dir != "" {
		os.Exit(runPublishingAgent(dir, os.Getenv(helperAddrEnv)))
	}
	os.Exit(m.Run())
}

// staticLocator says the volume is at one address.
type staticLocator string

func (l staticLocator) PrimaryAddress(context.Context, string) (string, error) { return string(l), nil }
func (l staticLocator) PublishedNode(context.Context, string) (string, uint64, error) {
	return "node-a", 0, nil
}
func (l staticLocator) Health(context.Context, string) (VolumeHealth, error) {
	return VolumeHealth{}, nil
}

// runPublishingAgent stages volA in dir, publishes it at dir/pod, writes
// a file, says so on stdout and waits to be killed.
func runPublishingAgent(dir, addr string) int {
	s, err := NewNodeServer(NodeConfig{NodeID: "node-a", StateDir: filepath.Join(dir, "state"),
		MountDir: filepath.Join(dir, "attach"), Locator: staticLocator(addr)})
	if err == nil {
		err = stageAndWrite(s, dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(helperReady)
	select {}
}

func stageAndWrite(s *NodeServer, dir string) error {
	c := mountCap("ext4", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	ctx := context.Background()
	_, err := s.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{VolumeId: volA,
		StagingTargetPath: filepath.Join(dir, "staging"), VolumeCapability: c})
	if err != nil {
		return err
	}
	_, err = s.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{VolumeId: volA,
		StagingTargetPath: filepath.Join(dir, "staging"), TargetPath: filepath.Join(dir, "pod"), VolumeCapability: c})
	if err != nil {
		return err
	}
	return syncedWrite(filepath.Join(dir, "pod", "before"), []byte("written before the restart"))
}

func syncedWrite(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Sync()
}

// TestNodeKernelRestore kills an agent that has a volume staged and
// published, and checks that a new one finds the volume again: attached
// anew, mounted at the staging path and target, data readable and
// writable, and unstaged cleanly.
func TestNodeKernelRestore(t *testing.T) {
	requireKernel(t, "mkfs.ext4")
	e := newKernelEnv(t, 256<<20)
	runKilledAgent(t, e)

	if err := e.s.Restore(context.Background()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	t.Cleanup(func() { e.unstage(t) })
	t.Cleanup(func() { e.unpublish(t, e.path("pod")) })
	if m := procMount(t, e.path("pod")); len(m) < 3 || m[2] != "ext4" {
		t.Fatalf("target mount after restore: %v", m)
	}
	got, err := os.ReadFile(e.path("pod/before"))
	if err != nil || string(got) != "written before the restart" {
		t.Errorf("read after restore: %q, %v", got, err)
	}
	if err := syncedWrite(e.path("pod/after"), []byte("after")); err != nil {
		t.Errorf("write after restore: %v", err)
	}
}

// runKilledAgent runs the helper agent until it has published, then
// kills it.
func runKilledAgent(t *testing.T, e *kernelEnv) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+e.dir, helperAddrEnv+"="+e.v.addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Scan()
		line <- sc.Text()
	}()
	select {
	case l := <-line:
		if strings.TrimSpace(l) != helperReady {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper agent: %q\n%s", l, stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper agent did not publish\n%s", stderr.String())
	}
	cmd.Process.Kill()
	cmd.Wait()
}
