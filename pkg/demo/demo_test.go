package demo

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoReplicatesTheSourceTree runs the whole demo against freshly
// built node processes: the copy must read back intact and the three
// replicas must hash the same.
func TestDemoReplicatesTheSourceTree(t *testing.T) {
	for _, tool := range []string{"nbdcopy", "qemu-img", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing; CI must install it", tool)
			}
			t.Skipf("%s is missing", tool)
		}
	}
	bin := filepath.Join(t.TempDir(), "trireme")
	build := exec.Command("go", "build", "-o", bin, "github.com/trireme-csi/trireme/cmd/trireme")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build trireme: %v\n%s", err, out)
	}
	var out bytes.Buffer
	dir := filepath.Join(t.TempDir(), "demo")
	if err := Run(context.Background(), Options{Binary: bin, Dir: dir, Out: &out}); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"node-a in zone-a", "node-b in zone-b", "node-c in zone-c",
		"match the archive byte for byte",
		"all three replicas hold the same bytes.",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo left its directory behind: %v", err)
	}
}
