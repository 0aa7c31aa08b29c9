package chaos

import (
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Markers around the generated section of docs/failover.md.
const (
	beginMarker = "<!-- figures:begin (make failover-figures writes this section) -->"
	endMarker   = "<!-- figures:end -->"
)

// median and maximum of a sample.
func medMax[T int64 | float64 | time.Duration](xs []T) (med, mx T) {
	if len(xs) == 0 {
		return 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[n-1]
}

func minOf[T int64 | float64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	return slices.Min(xs)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// markdown renders the figures as the section of docs/failover.md.
func (f *figures) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Measured %s on this machine (%d CPUs, `go test ./test/chaos -run TestFigures`),\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU())
	fmt.Fprintf(&b, "%d runs each, with the default settings of `trireme controller` and `trireme node`.\n\n", f.runs)
	b.WriteString("| figure | runs | median | max |\n|---|---|---|---|\n")
	fm, fx := medMax(f.failoverT)
	fmt.Fprintf(&b, "| failover: kill -9 of every node of the primary's zone → first write acknowledged on the new primary | %d | %s | %s |\n", len(f.failoverT), secs(fm), secs(fx))
	rm, rx := medMax(f.replaceT)
	fmt.Fprintf(&b, "| replacement: same kill → replacement replica InSync in the record (64 MiB volume, 16 MiB written) | %d | %s | %s |\n", len(f.replaceT), secs(rm), secs(rx))
	cm, cx := medMax(f.resyncCopy)
	dm, dx := medMax(f.resyncDirty)
	tm, tx := medMax(f.resyncTotal)
	fmt.Fprintf(&b, "| resync after a 10 s outage of one replica: bytes copied | %d | %s | %s |\n", len(f.resyncCopy), mib(cm), mib(cx))
	fmt.Fprintf(&b, "| … distinct bytes written during the outage | %d | %s | %s |\n", len(f.resyncDirty), mib(dm), mib(dx))
	fmt.Fprintf(&b, "| … bytes written during the outage, overwrites included | %d | %s | %s |\n", len(f.resyncTotal), mib(tm), mib(tx))
	bm, bx := medMax(f.rebuildBps)
	km, kx := medMax(f.diskBps)
	fmt.Fprintf(&b, "| rebuild: full copy to a replacement replica (512 MiB written) | %d | %.0f MiB/s | %.0f MiB/s |\n", len(f.rebuildBps), bm/(1<<20), bx/(1<<20))
	fmt.Fprintf(&b, "| disk sequential write, `dd bs=1M count=512 oflag=direct` in the nodes' data directory | %d | %.0f MiB/s | %.0f MiB/s |\n", len(f.diskBps), km/(1<<20), kx/(1<<20))
	sm, sx := medMax(f.diskSyncBps)
	fmt.Fprintf(&b, "| disk sequential write, `dd bs=1M count=512 conv=fdatasync` (page cache, then synced) | %d | %.0f MiB/s | %.0f MiB/s |\n\n", len(f.diskSyncBps), sm/(1<<20), sx/(1<<20))
	if km > 0 && len(f.rebuildBps) > 0 {
		fmt.Fprintf(&b, "Rebuild runs at %.0f%% of the disk's sequential write speed (medians; slowest rebuild %.0f MiB/s).\n",
			100*bm/km, minOf(f.rebuildBps)/(1<<20))
	}
	if len(f.resyncCopy) > 0 {
		fmt.Fprintf(&b, "The returning replica's resync copied %s (median) for %s of distinct data written while it was away; resyncs by mode: %s.\n",
			mib(cm), mib(dm), countModes(f))
	}
	if f.badCreates > 0 {
		fmt.Fprintf(&b, "%d volume creations left an unusable volume (the CreateVolume race the chaos test reports) and were made again.\n", f.badCreates)
	}
	for _, n := range f.notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	return b.String()
}

// countModes says how many resyncs ran in each mode, with the median
// bytes each copied.
func countModes(f *figures) string {
	by := map[string][]int64{}
	for i, m := range f.resyncMode {
		by[m] = append(by[m], f.resyncCopy[i])
	}
	var parts []string
	for _, m := range slices.Sorted(maps.Keys(by)) {
		med, mx := medMax(by[m])
		parts = append(parts, fmt.Sprintf("%s %d (median %s, max %s copied)", m, len(by[m]), mib(med), mib(mx)))
	}
	return strings.Join(parts, "; ")
}

// replaceSection puts section between the markers of the file at path,
// or appends it with the markers when they are missing.
func replaceSection(path, section string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(old)
	block := beginMarker + "\n" + section + endMarker + "\n"
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if i >= 0 && j > i {
		doc = doc[:i] + block + strings.TrimPrefix(doc[j+len(endMarker):], "\n")
	} else {
		doc += "\n" + block
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
