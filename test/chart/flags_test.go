package chart

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/chartargs"
	"github.com/trireme-csi/trireme/internal/kubetest"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// triremeBinary builds cmd/trireme once for the package's tests.
func triremeBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "trireme-chart-test")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "trireme")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/trireme")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.Join(err, errors.New(string(out)))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// TestChartFlagsAreTheBinarys parses the args the chart gives each trireme
// container with the binary's own flag set: it runs the command with the
// args and -h last, which parses every flag before printing the usage.
func TestChartFlagsAreTheBinarys(t *testing.T) {
	skipUnderRace(t)
	bin := triremeBinary(t)
	pod := chartargs.Pod{Name: "p", Namespace: namespace, IP: "127.0.0.9", NodeName: "node-1", HostIP: "127.0.0.9"}
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) {
			c, err := chartargs.Parse(helm(t, templateArgs(files)...))
			if err != nil {
				t.Fatal(err)
			}
			for component, ctr := range map[string]chartargs.Container{chartargs.Controller: c.Controller, chartargs.Node: c.Node} {
				args, env, err := ctr.Resolve(pod)
				if err != nil {
					t.Fatal(err)
				}
				if len(args) == 0 || args[0] != component {
					t.Fatalf("%s container runs %q, want the %s command", component, args, component)
				}
				for _, a := range args[1:] {
					if !strings.HasPrefix(a, "--") || strings.Contains(a, "$(") {
						t.Errorf("%s: argument %q is not a resolved --flag[=value]", component, a)
					}
				}
				checkFlagsParse(t, bin, component, args, env)
			}
		})
	}
}

func checkFlagsParse(t *testing.T, bin, component string, args, env []string) {
	t.Helper()
	// A binary that ignored -h would serve: bound the run.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "-h")...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("%s %q -h: %v, want the usage and exit code 2\n%s", bin, args, err, stderr.Bytes())
	}
	for _, bad := range []string{"flag provided but not defined", "invalid value", "invalid boolean", "unexpected arguments"} {
		if strings.Contains(stderr.String(), bad) {
			firstLine, _, _ := strings.Cut(stderr.String(), "\n")
			t.Errorf("%s refuses the chart's args: %s", component, firstLine)
		}
	}
}

// sidecarTools are the sidecars hack/build-tools.sh builds, by container
// name in the controller pod.
var sidecarTools = map[string]string{
	"csi-provisioner": kubetest.CSIProvisioner,
	"csi-attacher":    kubetest.CSIAttacher,
	"csi-resizer":     kubetest.CSIResizer,
}

// TestChartSidecarFlagsAreTheSidecars runs each built sidecar with the
// args the chart gives it: with --help last, which parses them all, and
// then for real without a cluster, which gets past the feature gates
// before it fails for want of a kubeconfig.
func TestChartSidecarFlagsAreTheSidecars(t *testing.T) {
	pod := chartargs.Pod{Name: "p", Namespace: namespace, IP: "127.0.0.9"}
	c, err := chartargs.Parse(helm(t, templateArgs(nil)...))
	if err != nil {
		t.Fatal(err)
	}
	for name, tool := range sidecarTools {
		t.Run(name, func(t *testing.T) {
			bin := kubetest.Tool(t, tool)
			ctr, ok := c.ControllerPod[name]
			if !ok {
				t.Fatalf("the controller pod has no %s", name)
			}
			args, _, err := ctr.Resolve(pod)
			if err != nil {
				t.Fatal(err)
			}
			out, err := runBounded(bin, append(args, "--help")...)
			if err != nil {
				t.Errorf("%s %q --help: %v\n%s", name, args, err, lastLines(out, 3))
			}
			out, _ = runBounded(bin, append(args, "--kubeconfig="+filepath.Join(t.TempDir(), "none"))...)
			for _, bad := range []string{"unrecognized feature gate", "setting GA feature gate", "setting deprecated feature gate", "unknown flag"} {
				if strings.Contains(out, bad) {
					t.Errorf("%s with the chart's args says %q:\n%s", name, bad, lastLines(out, 5))
				}
			}
		})
	}
}

// runBounded runs a command for at most a minute and returns its output.
func runBounded(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
