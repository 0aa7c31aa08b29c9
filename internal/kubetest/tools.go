package kubetest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trireme-csi/trireme/internal/testenv"
)

// The tools hack/build-tools.sh builds, by the name of their binary.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	CSIProvisioner        = "csi-provisioner"
	CSIAttacher           = "csi-attacher"
	CSIResizer            = "csi-resizer"
	Helm                  = "helm"
)

// versionKeys maps each tool to the variable of hack/tools/versions.env
// that pins it.
var versionKeys = map[string]string{
	Etcd:                  "ETCD_VERSION",
	KubeAPIServer:         "KUBERNETES_VERSION",
	KubeControllerManager: "KUBERNETES_VERSION",
	CSIProvisioner:        "CSI_PROVISIONER_VERSION",
	CSIAttacher:           "CSI_ATTACHER_VERSION",
	CSIResizer:            "CSI_RESIZER_VERSION",
	Helm:                  "HELM_VERSION",
}

// versionsFile is where the tool versions are pinned, from the repository
// root.
const versionsFile = "hack/tools/versions.env"

// errNoRepo means the working directory is not inside the repository.
var errNoRepo = errors.New("repository root not found above the working directory")

// Tool returns the path of a built tool, such as Tool(t, Helm). When it is
// not built, t is skipped, or failed under CI (see package testenv):
// `make tools` builds every tool.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := ToolPath(name)
	if err != nil {
		t.Fatalf("find %s: %v", name, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Logf("%s is not built; `make tools` builds it", path)
	}
	testenv.Require(t, path)
	return path
}

// ToolPath returns where hack/build-tools.sh puts a tool: below
// $TRIREME_TOOLS, or the repository's .cache/tools, in a directory named
// for the tool and its pinned version. The file may not exist.
func ToolPath(name string) (string, error) {
	key, ok := versionKeys[name]
	if !ok {
		return "", fmt.Errorf("unknown tool %q", name)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	versions, err := readVersions(filepath.Join(root, versionsFile))
	if err != nil {
		return "", err
	}
	v := versions[key]
	if v == "" {
		return "", fmt.Errorf("%s does not set %s", versionsFile, key)
	}
	dir := os.Getenv("TRIREME_TOOLS")
	if dir == "" {
		dir = filepath.Join(root, ".cache", "tools")
	}
	return filepath.Join(dir, name+"-"+v, name), nil
}

// RepoRoot returns the repository's root: the nearest directory above the
// working directory that holds the tool versions file.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, versionsFile)); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errNoRepo
		}
		dir = parent
	}
}

// readVersions parses NAME=value lines, skipping blanks and comments.
func readVersions(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: bad line %q", path, line)
		}
		out[k] = v
	}
	return out, sc.Err()
}
