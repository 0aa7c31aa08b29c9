package localcluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/internal/testenv"
)

// TestShareMountsLetsAnUnmountReachANamespaceCreatedMeanwhile mounts a
// filesystem below a shared directory, lets another mount namespace copy
// it as ip netns exec does (every mount a slave), and unmounts it here:
// the copy must go too, or the filesystem would stay alive there.
func TestShareMountsLetsAnUnmountReachANamespaceCreatedMeanwhile(t *testing.T) {
	testenv.Require(t, "root", "unshare", "sleep")
	dir := resolve(t.TempDir())
	if err := shareMounts(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	vol := filepath.Join(dir, "vol")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", vol, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(vol, unix.MNT_DETACH) })

	other := exec.Command("unshare", "--mount", "--propagation", "slave", "sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	mounts := filepath.Join("/proc", strconv.Itoa(other.Process.Pid), "mounts")
	waitFor(t, func() bool { return mountedIn(mounts, vol) }, "the other namespace to hold a copy of "+vol)

	if err := unix.Unmount(vol, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return !mountedIn(mounts, vol) }, "the unmount to reach the other namespace")
	if err := unshareMounts(dir); err != nil {
		t.Errorf("unshareMounts: %v", err)
	}
}

func mountedIn(mountsFile, path string) bool {
	b, err := os.ReadFile(mountsFile)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == path {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
