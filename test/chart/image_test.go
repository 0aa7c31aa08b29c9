package chart

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trireme-csi/trireme/internal/testenv"
)

// imageCommands are what the node plugin runs in its container: mount and
// loop devices, and through k8s.io/mount-utils the filesystem tools of
// every fsType it supports (format, check, grow) and blkid.
var imageCommands = []string{
	"mount", "umount", "losetup", "blkid", "fsck",
	"mkfs.ext4", "fsck.ext4", "resize2fs",
	"mkfs.xfs", "xfs_repair", "xfs_growfs",
}

func TestImageBinaryIsStaticAndReproducible(t *testing.T) {
	skipUnderRace(t)
	testenv.Require(t, "make")
	const version = "v0.0.0-imagetest"
	dir := t.TempDir()
	var builds [][]byte
	for _, name := range []string{"a", "b"} {
		out := filepath.Join(dir, name, "trireme")
		cmd := exec.Command("make", "-s", "image-binary", "VERSION="+version, "IMAGE_BINARY="+out)
		cmd.Dir = repoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make image-binary: %v\n%s", err, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		builds = append(builds, b)
	}
	if !bytes.Equal(builds[0], builds[1]) {
		t.Error("two builds of one tree differ")
	}

	bin := filepath.Join(dir, "a", "trireme")
	checkStatic(t, bin)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), "trireme "+version; got != want {
		t.Errorf("version prints %q, want %q", got, want)
	}
	if bytes.Contains(builds[0], []byte(repoRoot(t))) {
		t.Error("the binary holds the build directory's path")
	}
}

// checkStatic fails t unless bin is an ELF executable that needs no
// dynamic loader or shared library.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
}

func TestDockerfileBuildsWithMakeAndShipsTheNodeTools(t *testing.T) {
	dockerfile := string(readRepoFile(t, "Dockerfile"))
	if !regexp.MustCompile(`(?m)^RUN make image-binary `).MatchString(dockerfile) {
		t.Error("the build stage does not run `make image-binary`, the step this package tests")
	}
	m := regexp.MustCompile(`apt-get install -y --no-install-recommends ([a-z0-9 .+-]+)`).FindStringSubmatch(dockerfile)
	if m == nil {
		t.Fatal("no apt-get install line in the runtime stage")
	}
	packages := strings.Fields(m[1])

	testenv.Require(t, "dpkg-query")
	for _, c := range imageCommands {
		path, err := exec.LookPath(c)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Errorf("%s is not installed; hack/install-deps.sh installs it", c)
			}
			continue
		}
		if pkg := debianPackage(path); !slices.Contains(packages, pkg) {
			t.Errorf("%s comes from package %q, which the image does not install (%q)", c, pkg, packages)
		}
	}
}

// debianPackage returns the Debian package that installed path, trying
// the path with and without /usr (merged-/usr systems register either).
func debianPackage(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	for _, p := range []string{path, strings.TrimPrefix(path, "/usr"), "/usr" + path} {
		out, err := exec.Command("dpkg-query", "-S", p).Output()
		if err == nil {
			pkg, _, _ := strings.Cut(string(out), ":")
			return strings.TrimSpace(pkg)
		}
	}
	return ""
}
