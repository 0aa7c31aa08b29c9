package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// TestChaos runs random fault schedules against a controller and six node
// agents in three zones while clients write and read, and after each
// schedule heals checks that the history was linearizable, that no
// acknowledged write was lost, that every InSync replica is identical,
// that placement keeps I6, and that every volume is back to three InSync
// replicas. CHAOS_SEED=N CHAOS_SCHEDULES=1 replays one schedule.
func TestChaos(t *testing.T) {
	cfg := loadConfig(t, 30)
	t.Logf("chaos: %d schedules from seed %d (replay one with CHAOS_SEED=<its seed> CHAOS_SCHEDULES=1)", cfg.schedules, cfg.seed)
	c := newTestCluster(t, 2)
	var ids []string
	for _, n := range c.nodes {
		ids = append(ids, n.id)
	}
	start := time.Now()
	var total scheduleStats
	failed := 0
	for i := range cfg.schedules {
		s := newSchedule(cfg.seed+uint64(i), ids, c.spec.zones, cfg.vols)
		t.Logf("schedule %d/%d seed %d: %s", i+1, cfg.schedules, s.seed, s)
		st, err := runSchedule(t, c, s, cfg)
		total.add(st)
		if err != nil {
			t.Fatalf("schedule seed %d (replay: CHAOS_SEED=%d CHAOS_SCHEDULES=1): %v", s.seed, s.seed, err)
		}
		if st.failed {
			failed++
		}
		if failed >= cfg.maxFailed {
			t.Fatalf("stopping after %d failed schedules", failed)
		}
	}
	t.Logf("chaos: %d schedules in %s: %d operations (%d writes with unknown outcome), %d registers checked; %d CSI calls retried",
		cfg.schedules, time.Since(start).Round(time.Second), total.ops, total.unknown, total.cells, retries.Load())
}

// scheduleStats counts what one schedule checked. A schedule fails when
// a check after its faults does; one whose volumes could not be created
// is reported but does not count, so that the run goes on to the faults.
type scheduleStats struct {
	ops, unknown, cells int
	failed              bool
}

func (s *scheduleStats) add(o scheduleStats) {
	s.ops += o.ops
	s.unknown += o.unknown
	s.cells += o.cells
}

// runSchedule creates fresh volumes, runs the workload through the
// faults, heals, and checks. Invariant violations are reported with
// t.Errorf; the error it returns means the cluster cannot go on.
func runSchedule(t *testing.T, c *cluster, s schedule, cfg config) (scheduleStats, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	began := time.Now()
	vols, err := createVolumes(ctx, c, s, cfg)
	defer deleteVolumes(t, c, vols)
	if err == nil {
		err = c.waitRedundant(ctx, vols, 30*time.Second)
	}
	if err != nil {
		t.Errorf("schedule seed %d: before any fault: %v", s.seed, err)
		return scheduleStats{}, nil
	}
	mon := startMonitor(ctx, c, vols)
	wl, err := startWorkload(ctx, c, vols, cfg.writersPerVol, s.seed, cfg.retry)
	if err != nil {
		mon.halt()
		return scheduleStats{}, err
	}
	defer wl.close()

	time.Sleep(300 * time.Millisecond)
	in := newInjector(c, vols, func(f string, a ...any) { t.Logf("  %6.2fs "+f, append([]any{time.Since(began).Seconds()}, a...)...) })
	in.run(ctx, s)
	healErr := in.healAll()
	time.Sleep(time.Second) // writes resume after the heal
	wl.halt()
	faultsDone := time.Since(began)

	redundantErr := c.waitRedundant(ctx, vols, cfg.healTimeout)
	healed := time.Since(began)
	var readErr error
	if redundantErr == nil {
		readErr = wl.finalRead(ctx, c, vols, cfg.writersPerVol, cfg.retry)
	}
	monFindings, layouts := mon.halt()

	label := fmt.Sprintf("seed%d", s.seed)
	v := checkHistory(wl.hist.snapshot(), func() string { return artifactsDir(t) }, label)
	findings := append(monFindings, v.findings...)
	if redundantErr == nil {
		findings = append(findings, checkFinal(ctx, c, vols)...)
	}
	st := scheduleStats{ops: v.ops, unknown: v.unknown, cells: v.cells}
	t.Logf("  schedule seed %d: faults healed at %.1fs, full redundancy at %.1fs; %d ops, %d unknown writes, longest write %.2fs, %d registers",
		s.seed, faultsDone.Seconds(), healed.Seconds(), v.ops, v.unknown, longestWrite(wl.hist.snapshot()).Seconds(), v.cells)

	if len(findings) > 0 || readErr != nil || redundantErr != nil || healErr != nil {
		st.failed = true
		report(t, s, findings, v.visualized, layouts, readErr, healErr, redundantErr)
	}
	return st, c.waitRegistered(ctx, cfg.healTimeout)
}

// longestWrite is the longest time a write took: the longest pause a
// writer saw.
func longestWrite(ops []op) time.Duration {
	var d int64
	for _, o := range ops {
		if o.write {
			d = max(d, o.ret-o.call)
		}
	}
	return time.Duration(d)
}

// createVolumes makes the schedule's volumes, each published to a node.
func createVolumes(ctx context.Context, c *cluster, s schedule, cfg config) ([]*volume, error) {
	var vols []*volume
	for k := range cfg.vols {
		v, err := c.createVolume(ctx, fmt.Sprintf("chaos-%d-%d", s.seed, k), cfg.volSize, s.primaryZones[k], s.publishTo[k])
		if v != nil {
			vols = append(vols, v)
		}
		if err != nil {
			return vols, err
		}
	}
	return vols, nil
}

// deleteVolumes unpublishes and deletes the schedule's volumes.
func deleteVolumes(t *testing.T, c *cluster, vols []*volume) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, v := range vols {
		if err := c.deleteVolume(ctx, v); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// checkFinal checks replicas and placement on each volume's record once
// it is back to full redundancy.
func checkFinal(ctx context.Context, c *cluster, vols []*volume) []string {
	var out []string
	for _, v := range vols {
		resp, err := c.locate(ctx, v.id)
		if err != nil {
			out = append(out, fmt.Sprintf("volume %s: locate: %v", v.name, err))
			continue
		}
		l := resp.GetLayout()
		out = append(out, c.stableChecksums(ctx, v)...)
		out = append(out, c.checkPlacement(v, l)...)
		out = append(out, leftoverFaulted(v, l)...)
	}
	return out
}

// stableChecksums compares the InSync replicas' checksums, again if the
// record changed while they were taken (the controller may still be
// moving a replica for balance).
func (c *cluster) stableChecksums(ctx context.Context, v *volume) []string {
	var out []string
	for range 5 {
		before, err := c.locate(ctx, v.id)
		if err != nil {
			return []string{fmt.Sprintf("volume %s: locate: %v", v.name, err)}
		}
		out = c.checkReplicas(ctx, v, before.GetLayout())
		after, err := c.locate(ctx, v.id)
		if err == nil && after.GetLayout().GetEpoch() == before.GetLayout().GetEpoch() {
			return out
		}
		time.Sleep(500 * time.Millisecond)
	}
	return append(out, fmt.Sprintf("volume %s: record kept changing while replicas were compared", v.name))
}

// leftoverFaulted names Faulted replicas still in a record that is back
// to three InSync replicas: they should have been dropped.
func leftoverFaulted(v *volume, l *apiv1.Layout) []string {
	var out []string
	for _, r := range l.GetReplicas() {
		if r.GetState() == apiv1.ReplicaState_REPLICA_STATE_FAULTED {
			out = append(out, fmt.Sprintf("volume %s: Faulted replica on %s still listed after full redundancy: %s", v.name, r.GetNodeId(), describeLayout(l)))
		}
	}
	return out
}

// report fails the test with everything known about a schedule's
// failure, and writes it to the artifacts.
func report(t *testing.T, s schedule, findings, visualized []string, layouts map[string][]string, errs ...error) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "schedule seed %d FAILED (replay: CHAOS_SEED=%d CHAOS_SCHEDULES=1)\nfaults: %s\n", s.seed, s.seed, s)
	for _, err := range errs {
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
		}
	}
	for i, f := range findings {
		if i == 40 {
			fmt.Fprintf(&b, "... and %d more findings\n", len(findings)-i)
			break
		}
		fmt.Fprintf(&b, "violation: %s\n", f)
	}
	for _, p := range visualized {
		fmt.Fprintf(&b, "porcupine visualization: %s\n", p)
	}
	for name, ls := range layouts {
		fmt.Fprintf(&b, "records of %s as the controller showed them:\n  %s\n", name, strings.Join(ls, "\n  "))
	}
	if a := artifactsDir(t); a != "" {
		p := filepath.Join(a, fmt.Sprintf("seed%d-report.txt", s.seed))
		if err := os.WriteFile(p, []byte(b.String()), 0o644); err == nil {
			fmt.Fprintf(&b, "report written to %s\n", p)
		}
	}
	t.Error(b.String())
}
