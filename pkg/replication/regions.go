package replication

import (
	"maps"
	"slices"
)

// regionGrain is the granularity at which a primary remembers written
// regions: a write marks every grain it touches.
const regionGrain = 4 << 10

// maxGrains bounds a regionSet: 1 GiB of 4 KiB grains. A set that would
// grow past it overflows: it forgets its grains and stands for "unknown",
// and a replica it describes gets a full comparison instead.
const maxGrains = 1 << 18

// regionSet is a set of grains of a volume, kept sparse: it costs memory
// in proportion to the regions written, not to the volume size, up to
// maxGrains.
type regionSet struct {
	grains   map[int64]struct{}
	overflow bool
}

func newRegionSet() *regionSet { return &regionSet{grains: map[int64]struct{}{}} }

// add marks every grain that [off, off+n) touches.
func (s *regionSet) add(off, n int64) {
	if n <= 0 || s.overflow {
		return
	}
	for g := off / regionGrain; g <= (off+n-1)/regionGrain; g++ {
		s.grains[g] = struct{}{}
	}
	if len(s.grains) > maxGrains {
		s.forget()
	}
}

func (s *regionSet) forget() {
	s.overflow = true
	s.grains = map[int64]struct{}{}
}

func (s *regionSet) union(o *regionSet) {
	if o.overflow {
		s.forget()
	}
	if s.overflow {
		return
	}
	maps.Copy(s.grains, o.grains)
	if len(s.grains) > maxGrains {
		s.forget()
	}
}

// extent is a byte range of a volume.
type extent struct{ off, n int64 }

// extents lists the set as ranges in ascending order, adjacent grains
// merged up to maxLen bytes a range, and clipped to size.
func (s *regionSet) extents(size, maxLen int64) []extent {
	var out []extent
	for _, g := range slices.Sorted(maps.Keys(s.grains)) {
		off := g * regionGrain
		if off >= size {
			continue
		}
		n := min(regionGrain, size-off)
		if k := len(out) - 1; k >= 0 && out[k].off+out[k].n == off && out[k].n+n <= maxLen {
			out[k].n += n
			continue
		}
		out = append(out, extent{off, n})
	}
	return out
}

// tracker holds what a replica that left the write path has missed since:
// every region written after it left, and every region it may not have
// made durable before. It is only valid for the replica incarnation it
// was made for, and not at all once its set overflowed.
type tracker struct {
	incarnation uint64
	missed      *regionSet
}
