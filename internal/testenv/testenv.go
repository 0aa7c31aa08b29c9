// Package testenv decides what a test does when the machine lacks
// something it needs: it skips on a developer's machine, and fails under
// CI (the CI environment variable is set), which must provide it all.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Kernel names what tests that attach volumes need: root, FUSE, loop
// devices and the mount tools.
var Kernel = []string{"root", "/dev/fuse", "/dev/loop-control", "mount", "umount", "blkid"}

// Require skips t, or fails it under CI, unless every need is met. A need
// is "root", a path (present when it exists) or a command (on PATH).
func Require(t testing.TB, needs ...string) {
	t.Helper()
	if missing := Missing(needs...); len(missing) > 0 {
		fail(t, missing)
	}
}

// Missing returns the needs that are not met.
func Missing(needs ...string) []string {
	var missing []string
	for _, n := range needs {
		if !met(n) {
			missing = append(missing, n)
		}
	}
	return missing
}

func met(need string) bool {
	switch {
	case need == "root":
		return os.Geteuid() == 0
	case strings.HasPrefix(need, "/"):
		_, err := os.Stat(need)
		return err == nil
	default:
		_, err := exec.LookPath(need)
		return err == nil
	}
}

func fail(t testing.TB, missing []string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI must provide %s", strings.Join(missing, ", "))
	}
	t.Skipf("needs %s", strings.Join(missing, ", "))
}
