package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/trireme-csi/trireme/internal/chartargs"
	"github.com/trireme-csi/trireme/internal/kubetest"
)

const fixHint = "run `make manifests` and commit the result"

func TestDeployManifestsAreTheChartRendered(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot(t), "hack/render-manifests.sh"), out)
	cmd.Env = append(os.Environ(), "HELM="+kubetest.Tool(t, kubetest.Helm))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render-manifests: %v\n%s", err, b)
	}
	rendered, err := os.ReadFile(filepath.Join(out, "trireme.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rendered, readRepoFile(t, "deploy/trireme.yaml")) {
		t.Errorf("deploy/trireme.yaml differs from the chart rendered with its defaults: %s", fixHint)
	}

	// The manifests must decode as the objects the chart renders, but for
	// the generated CA Secret (the operator creates trireme-ca), and a
	// Namespace.
	if got, want := len(decode(t, rendered)), len(render(t))-1+1; got != want {
		t.Errorf("deploy/trireme.yaml has %d objects, want the chart's but its CA Secret, and a Namespace: %d", got, want)
	}
}

func TestChartCRDsAreDeployCRDs(t *testing.T) {
	root := repoRoot(t)
	deploy := yamlFiles(t, filepath.Join(root, "deploy/crds"))
	chart := yamlFiles(t, filepath.Join(root, chartDir, "crds"))
	if len(deploy) == 0 {
		t.Fatal("deploy/crds holds no CRDs")
	}
	if !slices.Equal(names(deploy), names(chart)) {
		t.Fatalf("chart CRDs %q, deploy CRDs %q: %s", names(chart), names(deploy), fixHint)
	}
	for i := range deploy {
		if !bytes.Equal(deploy[i].content, chart[i].content) {
			t.Errorf("%s/crds/%s differs from deploy/crds: %s", chartDir, deploy[i].name, fixHint)
		}
	}
}

func TestChartArgsOfTheDeployManifest(t *testing.T) {
	c, err := chartargs.FromFile(filepath.Join(repoRoot(t), chartargs.DeployManifest))
	if err != nil {
		t.Fatal(err)
	}
	pod := chartargs.Pod{Name: "p", Namespace: namespace, IP: "127.0.0.9", NodeName: "node-1"}
	args, _, err := c.Node.Resolve(pod)
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"node-id": "node-1", "listen-address": "127.0.0.9"} {
		if got, _ := chartargs.Flag(args, flag); got != want {
			t.Errorf("node --%s=%q, want %q", flag, got, want)
		}
	}
	if args, _, err = c.Controller.Resolve(pod); err != nil {
		t.Fatal(err)
	}
	if got, _ := chartargs.Flag(args, "listen-address"); got != "127.0.0.9" {
		t.Errorf("controller --listen-address=%q, want the pod's IP", got)
	}
}

type file struct {
	name    string
	content []byte
}

func yamlFiles(t *testing.T, dir string) []file {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var files []file
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{filepath.Base(p), b})
	}
	return files
}

func names(files []file) []string {
	var out []string
	for _, f := range files {
		out = append(out, f.name)
	}
	return out
}
