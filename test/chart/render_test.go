package chart

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/trireme-csi/trireme/internal/kubetest"
)

// Where things are, from the repository root.
const (
	chartDir     = "charts/trireme"
	customValues = "test/chart/testdata/values-custom.yaml"
	namespace    = "trireme-system"
)

// valueSets are the values every rendered-manifest test runs with: the
// chart's defaults, and a file that changes every value it can.
var valueSets = map[string][]string{
	"default": nil,
	"custom":  {customValues},
}

// repoRoot returns the repository's root directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// helm runs the built helm with args in the repository root and returns
// its standard output.
func helm(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := runHelm(t, args...)
	if err != nil {
		t.Fatalf("helm %q: %v", args, err)
	}
	return out
}

func runHelm(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(kubetest.Tool(t, kubetest.Helm), args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(),
		"HELM_DATA_HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, errors.Join(err, errors.New(stderr.String()))
	}
	return out, nil
}

// templateArgs are the arguments of `helm template` for values files.
func templateArgs(valuesFiles []string) []string {
	args := []string{"template", "trireme", chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	return args
}

// render renders the chart with valuesFiles and decodes every object.
func render(t testing.TB, valuesFiles ...string) []runtime.Object {
	t.Helper()
	return decode(t, helm(t, templateArgs(valuesFiles)...))
}

// strictYAML decodes built-in objects and refuses unknown fields and
// duplicate keys, which the API server would drop or merge silently.
var strictYAML = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// decode decodes a multi-document YAML stream of built-in objects.
func decode(t testing.TB, stream []byte) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := strictYAML.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode %s: %v", doc, err)
		}
		objs = append(objs, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
		}
	}
	return out
}

// objectsOf returns the objects of type T.
func objectsOf[T runtime.Object](objs []runtime.Object) []T {
	var out []T
	for _, o := range objs {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// only returns the one object of type T, failing t unless there is one.
func only[T runtime.Object](t testing.TB, objs []runtime.Object) T {
	t.Helper()
	all := objectsOf[T](objs)
	if len(all) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T, want 1", len(all), zero)
	}
	return all[0]
}

// forEachValueSet runs f for each value set, rendered once.
func forEachValueSet(t *testing.T, f func(t *testing.T, objs []runtime.Object)) {
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) { f(t, render(t, files...)) })
	}
}

// readRepoFile reads a file relative to the repository root.
func readRepoFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// skipUnderRace skips a test that only drives built binaries and
// servers: the race detector has nothing of ours to watch there, and
// make test runs the package once without it.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceEnabled {
		t.Skip("drives built binaries only; runs without -race")
	}
}
