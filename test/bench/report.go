package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// memorySample is the primary node process's memory at one moment.
type memorySample struct {
	label    string
	rssKiB   int64
	peakKiB  int64
	readFail error
}

func (m *memorySample) read(pid int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		m.readFail = err
		return
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		var v int64
		if _, err := fmt.Sscanf(s.Text(), "VmRSS: %d kB", &v); err == nil {
			m.rssKiB = v
		}
		if _, err := fmt.Sscanf(s.Text(), "VmHWM: %d kB", &v); err == nil {
			m.peakKiB = v
		}
	}
}

func machine(dir string) []string {
	return []string{
		"CPU: " + cpuModel() + fmt.Sprintf(", %d cores", runtime.NumCPU()),
		"Memory: " + memTotal(),
		"Kernel: " + commandOut("uname", "-sr"),
		"Disk holding the data: " + lastLine(commandOut("df", "-h", "--output=source,fstype,size", dir)),
		"Go: " + runtime.Version(),
		"fio: " + commandOut("fio", "--version"),
		"qemu-nbd: " + firstOf(commandOut("qemu-nbd", "--version")),
		"Page cache writeback: vm.dirty_ratio " + firstLine("/proc/sys/vm/dirty_ratio") +
			", vm.dirty_background_ratio " + firstLine("/proc/sys/vm/dirty_background_ratio"),
	}
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() string {
	var kib int64
	for _, l := range strings.Split(firstLines("/proc/meminfo"), "\n") {
		if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kib); err == nil {
			return fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
		}
	}
	return "unknown"
}

func firstLines(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(strings.Fields(lines[len(lines)-1]), " ")
}

func firstLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(firstOf(string(b))), " ")
}

func firstOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// commandOut returns what a command printed, or "unknown".
func commandOut(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func writeReport(cfg config, results []result, rebuilds []rebuildResult, mem []memorySample) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` on %s. fio's `nbd` engine runs each job against\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "three exports on this machine, one after the other, in one run:\n\n")
	fmt.Fprintf(&b, "- qemu-nbd serving a plain raw file (the single-copy reference);\n")
	fmt.Fprintf(&b, "- Trireme with 1 replica;\n")
	fmt.Fprintf(&b, "- Trireme with 3 replicas on three node processes (127.0.0.1-3), every write\n  acknowledged by all three.\n\n")
	fmt.Fprintf(&b, "All data files share one disk. Volumes are %d MiB and are filled before the\n", cfg.size>>20)
	fmt.Fprintf(&b, "timed jobs; every dirty page on the machine is written back (sync) before each\n")
	fmt.Fprintf(&b, "job, which then runs %s after a %s warm-up. The ratio compares IOPS\n", cfg.runtime, cfg.ramp)
	fmt.Fprintf(&b, "(bandwidth for 1 MiB jobs) with qemu-nbd's in the same run.\n\n")
	fmt.Fprintf(&b, "Trireme runs with `--insecure` here, as the reference does: fio's nbd engine\n")
	fmt.Fprintf(&b, "reaches an export through a libnbd URI, and libnbd refuses the certificate\n")
	fmt.Fprintf(&b, "files a URI names. With TLS, the default, every replication and NBD byte is\n")
	fmt.Fprintf(&b, "also encrypted, which these figures do not include.\n\n")
	fmt.Fprintf(&b, "## Machine\n\n")
	for _, l := range machine(cfg.dir) {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	fmt.Fprintf(&b, "- One thread's 4 KiB writes to a 1 GiB file on that disk: %.0f per second into\n"+
		"  holes, %.0f per second over allocated blocks\n", cfg.holeRate, cfg.overwriteRate)
	fmt.Fprintf(&b, "\n## Results\n\n")
	fmt.Fprintf(&b, "| job | export | IOPS | MiB/s | p99 latency | ratio to qemu-nbd |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.1f | %s | %.2fx |\n",
			r.job.name, r.target.name, r.iops, r.mibps, r.p99.Round(time.Microsecond), ratio(results, r))
	}
	writeRebuild(&b, cfg, rebuilds)
	fmt.Fprintf(&b, "\n## Memory of the primary's node process\n\n")
	fmt.Fprintf(&b, "| when | resident | peak resident |\n|---|---:|---:|\n")
	for _, m := range mem {
		fmt.Fprintf(&b, "| %s | %d MiB | %d MiB |\n", m.label, m.rssKiB>>10, m.peakKiB>>10)
	}
	fmt.Fprintf(&b, "\n## Against the goals\n\n")
	writeGoals(&b, results, rebuilds, mem)
	b.WriteString(keptNotes(cfg.out))
	return os.WriteFile(cfg.out, []byte(b.String()), 0o644)
}

// notesMarker starts the hand-written part of the report, which a new run
// keeps as it is.
const notesMarker = "<!-- notes: kept by make bench -->"

func keptNotes(path string) string {
	old, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if i := strings.Index(string(old), notesMarker); i >= 0 {
		return "\n" + string(old[i:])
	}
	return ""
}

func ratio(all []result, r result) float64 {
	for _, o := range all {
		if o.job == r.job && o.target.name == "qemu-nbd, plain file" {
			if o.iops == 0 {
				return 0
			}
			return r.iops / o.iops
		}
	}
	return 0
}

func find(all []result, jobName, target string) (result, bool) {
	for _, r := range all {
		if r.job.name == jobName && r.target.name == target {
			return r, true
		}
	}
	return result{}, false
}

// writeRebuild reports each full copy to a new replica against the disk's
// direct sequential write speed, measured just before it.
func writeRebuild(b *strings.Builder, cfg config, rebuilds []rebuildResult) {
	fmt.Fprintf(b, "\n## Rebuild\n\n")
	fmt.Fprintf(b, "The filled %d MiB volume with 3 replicas gets a new, empty replica in place\n", cfg.size>>20)
	fmt.Fprintf(b, "of one of them (node-c and node-d in turn, on 127.0.0.3 and .4), and the\n")
	fmt.Fprintf(b, "primary copies everything to it over TCP. The time runs from the start of\n")
	fmt.Fprintf(b, "the copy to the new replica's acknowledgement of the end of it, when the\n")
	fmt.Fprintf(b, "copy is durable (the primary's `Replica copy complete` log line). Just before\n")
	fmt.Fprintf(b, "each copy the disk's sequential write speed is measured on the same\n")
	fmt.Fprintf(b, "filesystem: %d MiB written 1 MiB at a time with `O_DIRECT`, then `fdatasync`,\n", cfg.size>>20)
	fmt.Fprintf(b, "as `dd oflag=direct bs=1M` does. The copy reads from the primary's replica\n")
	fmt.Fprintf(b, "and writes the new one on that same disk.\n\n")
	fmt.Fprintf(b, "| run | copied | time | rebuild | disk, direct sequential write | ratio |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|\n")
	for i, r := range rebuilds {
		fmt.Fprintf(b, "| %d | %d MiB | %s | %.0f MiB/s | %.0f MiB/s | %.2f |\n", i+1, r.bytes>>20,
			r.duration.Round(time.Millisecond), r.bps()/(1<<20), r.diskBps/(1<<20), r.bps()/r.diskBps)
	}
}

func rebuildMedians(rebuilds []rebuildResult) (rebuild, disk float64) {
	var rs, ds []float64
	for _, r := range rebuilds {
		rs, ds = append(rs, r.bps()), append(ds, r.diskBps)
	}
	return medianOf(rs), medianOf(ds)
}

func writeGoals(b *strings.Builder, results []result, rebuilds []rebuildResult, mem []memorySample) {
	goal := func(desc, jobName, target string, want float64) {
		r, ok := find(results, jobName, target)
		if !ok {
			return
		}
		got := ratio(results, r)
		verdict := "met"
		if got < want {
			verdict = "**not met**"
		}
		fmt.Fprintf(b, "- %s: %.2fx qemu-nbd, goal %.1fx: %s.\n", desc, got, want, verdict)
	}
	goal("3-replica 4 KiB random write at QD32", "4 KiB random write QD32", "Trireme, 3 replicas", 0.5)
	goal("3-replica 4 KiB random read at QD1", "4 KiB random read QD1", "Trireme, 3 replicas", 0.9)
	goal("3-replica 4 KiB random read at QD32", "4 KiB random read QD32", "Trireme, 3 replicas", 0.9)
	if len(rebuilds) > 0 {
		rebuild, disk := rebuildMedians(rebuilds)
		verdict := "met"
		if rebuild < 0.8*disk {
			verdict = "**not met**"
		}
		fmt.Fprintf(b, "- Rebuild over TCP: %.0f MiB/s against the disk's %.0f MiB/s (medians of %d\n"+
			"  runs), %.0f%%, goal 80%%: %s. With TLS, the default, see the rebuild figure in\n"+
			"  [failover.md](failover.md).\n", rebuild/(1<<20), disk/(1<<20), len(rebuilds), 100*rebuild/disk, verdict)
	}
	if len(mem) == 3 {
		fmt.Fprintf(b, "- Resident memory of the primary's process: %d MiB with two empty volumes,\n"+
			"  %d MiB after every job above, %d MiB after random writes across a 64 GiB\n"+
			"  volume; peak %d MiB. Request buffers are bounded by the requests in\n"+
			"  flight; the primary also keeps, per replica, the 4 KiB grains written since\n"+
			"  the last flush (at most 1 GiB's worth, then it falls back to comparing).\n",
			mem[0].rssKiB>>10, mem[1].rssKiB>>10, mem[2].rssKiB>>10, mem[2].peakKiB>>10)
	}
}
