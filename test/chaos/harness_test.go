package chaos

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/internal/testenv"
)

var (
	flagSchedules = flag.Int("chaos.schedules", 0, "schedules to run (default 30, or CHAOS_SCHEDULES)")
	flagSeed      = flag.Uint64("chaos.seed", 0, "seed of the first schedule (default: from the clock, or CHAOS_SEED)")
)

// buildDir holds the binary TestMain builds on demand.
var (
	buildDir    string
	buildOnce   sync.Once
	builtBinary string
	buildErr    error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// trireme returns the trireme binary: TRIREME_BINARY, or one built from
// this tree once per test process.
func trireme(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("TRIREME_BINARY"); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "trireme-chaos-build-"); buildErr != nil {
			return
		}
		builtBinary = filepath.Join(buildDir, "trireme")
		cmd := exec.Command("go", "build", "-o", builtBinary, "./cmd/trireme")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBinary
}

// moduleRoot is two levels up from this package.
func moduleRoot() string {
	wd, _ := os.Getwd()
	return filepath.Join(wd, "..", "..")
}

// config is one chaos run's settings.
type config struct {
	schedules     int
	seed          uint64
	vols          int
	writersPerVol int
	volSize       int64
	retry         time.Duration // the writers' retry timeout
	healTimeout   time.Duration
	maxFailed     int // failed schedules that end the run
}

func loadConfig(t *testing.T, defaultSchedules int) config {
	cfg := config{schedules: defaultSchedules, vols: 3, writersPerVol: 2, volSize: 16 << 20,
		retry: 20 * time.Second, healTimeout: 60 * time.Second, maxFailed: 3}
	if raceEnabled && os.Getenv("CHAOS_SCHEDULES") == "" && *flagSchedules == 0 {
		// The processes under test are separate binaries; make test runs
		// the schedules once, without -race.
		t.Skip("drives built binaries; runs without -race (set CHAOS_SCHEDULES to run under it)")
	}
	cfg.seed = uint64(time.Now().UnixNano() % 1_000_000_000)
	if v := os.Getenv("CHAOS_SCHEDULES"); v != "" {
		cfg.schedules = atoi(t, "CHAOS_SCHEDULES", v)
	}
	if *flagSchedules > 0 {
		cfg.schedules = *flagSchedules
	}
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		cfg.seed = uint64(atoi(t, "CHAOS_SEED", v))
	}
	if *flagSeed > 0 {
		cfg.seed = *flagSeed
	}
	if v := os.Getenv("CHAOS_MAX_FAILED"); v != "" {
		cfg.maxFailed = atoi(t, "CHAOS_MAX_FAILED", v)
	}
	if v := os.Getenv("CHAOS_HEAL_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CHAOS_HEAL_TIMEOUT: %v", err)
		}
		cfg.healTimeout = d
	}
	return cfg
}

func atoi(t *testing.T, name, v string) int {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// newTestCluster starts a controller and perZone nodes in each of three
// zones, each in its own network namespace; everything is removed when
// the test ends, and the logs are kept in the artifacts on failure.
func newTestCluster(t *testing.T, perZone int, extraNodeArgs ...string) *cluster {
	t.Helper()
	testenv.Require(t, "root", "ip")
	bin := trireme(t)
	if err := removeLeftovers(); err != nil {
		t.Logf("removing leftovers of earlier runs: %v", err)
	}
	removeLeftoverDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("trireme-chaos-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	clientLog := redirectClientLog(t, dir)
	spec := clusterSpec{binary: bin, dir: dir, zones: []string{"zone-a", "zone-b", "zone-c"},
		perZone: perZone, nodeArgs: extraNodeArgs}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := startCluster(ctx, spec)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.destroy(); err != nil {
			t.Errorf("removing the chaos network: %v", err)
		}
		klog.SetOutput(io.Discard)
		clientLog.Close()
		if t.Failed() {
			if a := artifactsDir(t); a != "" {
				saveLogs(t, dir, filepath.Join(a, "logs-"+strings.ReplaceAll(t.Name(), "/", "-")))
			}
		}
		os.RemoveAll(dir)
	})
	t.Logf("cluster up: controller %s, nodes %s, subnet %s/24, dir %s", c.controller.host.ip,
		nodeList(c), c.net.subnet, dir)
	return c
}

// redirectClientLog sends the log of the in-process NBD clients to
// client.log in dir, kept with the processes' logs.
func redirectClientLog(t *testing.T, dir string) *os.File {
	f, err := os.Create(filepath.Join(dir, "client.log"))
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"logtostderr": "false", "alsologtostderr": "false",
		"stderrthreshold": "FATAL", "legacy_stderr_threshold_behavior": "false", "one_output": "true"} {
		if err := fs.Set(k, v); err != nil {
			t.Logf("klog flag %s: %v", k, err)
		}
	}
	// Every severity: a severity without a writer goes to log files in
	// the temporary directory, which would outlive the test.
	klog.SetOutput(f)
	return f
}

func nodeList(c *cluster) string {
	var s []string
	for _, n := range c.nodes {
		s = append(s, fmt.Sprintf("%s(%s %s pid %d)", n.id, n.zone, n.host.ip, n.pid()))
	}
	return strings.Join(s, " ")
}

// removeLeftoverDirs removes work directories of chaos runs whose
// process is gone.
func removeLeftoverDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "trireme-chaos-*-*"))
	for _, d := range dirs {
		f := strings.Split(filepath.Base(d), "-")
		if len(f) < 4 {
			continue
		}
		if pid, err := strconv.Atoi(f[2]); err == nil && !alive(pid) {
			os.RemoveAll(d)
		}
	}
}

// artifactsDir is where failure evidence goes: CHAOS_ARTIFACTS, the
// test's artifact directory under -artifacts, or a new directory in the
// temporary directory that is kept.
var (
	artifactsOnce sync.Once
	artifactsPath string
)

func artifactsDir(t *testing.T) string {
	artifactsOnce.Do(func() {
		switch {
		case os.Getenv("CHAOS_ARTIFACTS") != "":
			artifactsPath = os.Getenv("CHAOS_ARTIFACTS")
		case flag.Lookup("test.artifacts") != nil && flag.Lookup("test.artifacts").Value.String() == "true":
			artifactsPath = t.ArtifactDir()
		default:
			artifactsPath = filepath.Join(os.TempDir(), "trireme-chaos-artifacts-"+time.Now().UTC().Format("20060102-150405"))
		}
		if err := os.MkdirAll(artifactsPath, 0o755); err != nil {
			t.Logf("artifacts: %v", err)
			artifactsPath = ""
		}
	})
	return artifactsPath
}

// saveLogs copies the processes' logs into dst.
func saveLogs(t *testing.T, src, dst string) {
	logs, _ := filepath.Glob(filepath.Join(src, "*.log"))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return
	}
	for _, l := range logs {
		if err := copyFile(l, filepath.Join(dst, filepath.Base(l))); err != nil {
			t.Logf("save log %s: %v", l, err)
		}
	}
	t.Logf("process logs saved in %s", dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
