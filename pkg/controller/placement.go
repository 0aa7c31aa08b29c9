package controller

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/trireme-csi/trireme/pkg/api"
)

// Placement asks for the nodes of a new volume's replicas.
type Placement struct {
	// Size is the bytes each replica needs.
	Size int64
	// Replicas is how many replicas to place, on as many nodes.
	Replicas int
	// TopologyKey names the failure domain replicas are spread over;
	// empty means api.ZoneTopologyKey.
	TopologyKey string
	// Requisite, if not empty, limits the primary to nodes that match one
	// of its segments. The other replicas may go anywhere: every node
	// reaches a volume over the network, so where they sit does not
	// change where the volume is accessible, and spreading them over
	// every zone is what keeps the data when one zone is lost. Preferred
	// names, in order, segments the primary should be in. A node matches
	// a segment when it has every key of the segment with the same value;
	// a segment may carry only some keys.
	Requisite []map[string]string
	Preferred []map[string]string
}

// Candidate is a node replicas may be placed on.
type Candidate struct {
	NodeID   string
	Topology map[string]string
	// Capacity is all the node offers; Free the part not yet reserved.
	Capacity int64
	Free     int64
}

// Place chooses req.Replicas distinct nodes among candidates, the primary
// first (invariant I6):
//   - the primary in the first preferred segment that has a node with room,
//     else on the node with the most free space, always within Requisite;
//   - each further replica in a domain (TopologyKey value) that holds none
//     yet while such a domain has a node with room, else on another node;
//   - among equals, the node with the most free space, then the lowest id.
//
// It fails with ErrCapacityOutOfRange when no eligible node could ever
// hold a replica of req.Size, and ErrNoPlacement when too few nodes have
// room. A node without the TopologyKey label counts as a domain of its own.
func Place(candidates []Candidate, req Placement) ([]Candidate, error) {
	if len(candidates) < req.Replicas {
		return nil, fmt.Errorf("%w: %d replicas need as many nodes, %d live nodes are eligible",
			ErrNoPlacement, req.Replicas, len(candidates))
	}
	if maxCapacity(candidates) < req.Size {
		return nil, fmt.Errorf("%w: %s asked, the largest node offers %s",
			ErrCapacityOutOfRange, formatSize(req.Size), formatSize(maxCapacity(candidates)))
	}
	fit := withRoom(candidates, req.Size)
	if len(fit) < req.Replicas {
		return nil, fmt.Errorf("%w: %d replicas of %d bytes need as many nodes with room, %d have it",
			ErrNoPlacement, req.Replicas, req.Size, len(fit))
	}
	sortByFree(fit)
	primaries := filterRequisite(fit, req.Requisite)
	if len(primaries) == 0 {
		return nil, fmt.Errorf("%w: no live storage node with room for %s is in %s",
			ErrNoPlacement, formatSize(req.Size), describeSegments(req.Requisite))
	}
	return spread(fit, primaries, req), nil
}

func spread(fit, primaries []Candidate, req Placement) []Candidate {
	key := cmp.Or(req.TopologyKey, api.ZoneTopologyKey)
	chosen := []Candidate{pickPrimary(primaries, req.Preferred)}
	used := map[string]bool{domain(chosen[0], key): true}
	for len(chosen) < req.Replicas {
		next := pickReplica(fit, chosen, used, key)
		chosen = append(chosen, next)
		used[domain(next, key)] = true
	}
	return chosen
}

// pickPrimary takes the first node, by free space, of the first preferred
// segment that has one; fit is sorted by free space.
func pickPrimary(fit []Candidate, preferred []map[string]string) Candidate {
	for _, seg := range preferred {
		for _, n := range fit {
			if matches(n.Topology, seg) {
				return n
			}
		}
	}
	return fit[0]
}

// pickReplica takes the first unchosen node in an unused domain, else the
// first unchosen node; fit is sorted by free space.
func pickReplica(fit, chosen []Candidate, used map[string]bool, key string) Candidate {
	var fallback *Candidate
	for i, n := range fit {
		if isChosen(chosen, n.NodeID) {
			continue
		}
		if !used[domain(n, key)] {
			return n
		}
		if fallback == nil {
			fallback = &fit[i]
		}
	}
	return *fallback
}

func isChosen(chosen []Candidate, id string) bool {
	return slices.ContainsFunc(chosen, func(c Candidate) bool { return c.NodeID == id })
}

// domain is the node's failure domain: its value of key, or the node
// itself when it has none.
func domain(n Candidate, key string) string {
	if v, ok := n.Topology[key]; ok {
		return "=" + v
	}
	return "node:" + n.NodeID
}

func filterRequisite(cs []Candidate, requisite []map[string]string) []Candidate {
	if len(requisite) == 0 {
		return slices.Clone(cs)
	}
	var out []Candidate
	for _, c := range cs {
		if slices.ContainsFunc(requisite, func(seg map[string]string) bool { return matches(c.Topology, seg) }) {
			out = append(out, c)
		}
	}
	return out
}

func withRoom(cs []Candidate, size int64) []Candidate {
	var out []Candidate
	for _, c := range cs {
		if c.Free >= size {
			out = append(out, c)
		}
	}
	return out
}

func maxCapacity(cs []Candidate) int64 {
	var m int64
	for _, c := range cs {
		m = max(m, c.Capacity)
	}
	return m
}

func sortByFree(cs []Candidate) {
	slices.SortFunc(cs, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(b.Free, a.Free), cmp.Compare(a.NodeID, b.NodeID))
	})
}

// matches says whether a node's topology has every key of seg with the
// same value.
func matches(topology, seg map[string]string) bool {
	for k, v := range seg {
		if got, ok := topology[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// describeSegments names topology segments for an error message, e.g.
// "topology.kubernetes.io/zone=zone-d or topology.kubernetes.io/zone=zone-e".
func describeSegments(segs []map[string]string) string {
	var parts []string
	for _, seg := range segs {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(seg)) {
			kv = append(kv, k+"="+seg[k])
		}
		parts = append(parts, strings.Join(kv, ","))
	}
	return strings.Join(parts, " or ")
}

// formatSize gives a byte count in the largest binary unit that keeps it
// exact to a tenth, with the bytes when that unit is not bytes.
func formatSize(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %s (%d bytes)", v, units[u], n)
}
