package controller_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/controller"
)

const gib = 1 << 30

// node is a candidate in zone with free GiB of 10 GiB capacity.
func node(id, zone string, free int64) controller.Candidate {
	return controller.Candidate{NodeID: id, Topology: map[string]string{api.ZoneTopologyKey: zone, "rack": "r-" + id},
		Capacity: 10 * gib, Free: free * gib}
}

// threeZonesTwoNodes: a1 has the most room in zone-a, b2 in zone-b, c1 in
// zone-c, and zone-c has the most room overall.
var threeZonesTwoNodes = []controller.Candidate{
	node("a1", "zone-a", 6), node("a2", "zone-a", 5),
	node("b1", "zone-b", 4), node("b2", "zone-b", 7),
	node("c1", "zone-c", 9), node("c2", "zone-c", 8),
}

func zone(z string) map[string]string { return map[string]string{api.ZoneTopologyKey: z} }

func TestPlace(t *testing.T) {
	tests := []struct {
		name       string
		candidates []controller.Candidate
		req        controller.Placement
		want       []string // node ids, primary first
		wantErr    error
	}{
		{"spread over three zones by free space", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 3}, []string{"c1", "b2", "a1"}, nil},
		{"primary in the preferred zone", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 3, Preferred: []map[string]string{zone("zone-a")}},
			[]string{"a1", "c1", "b2"}, nil},
		{"first preferred segment with a node wins", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 3, Preferred: []map[string]string{zone("zone-x"), zone("zone-b")}},
			[]string{"b2", "c1", "a1"}, nil},
		{"preferred segment with another key", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 2, Preferred: []map[string]string{{"rack": "r-a2"}}},
			[]string{"a2", "c1"}, nil},
		{"requisite limits the primary, the others spread", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 3, Requisite: []map[string]string{zone("zone-a"), zone("zone-b")}},
			[]string{"b2", "c1", "a1"}, nil},
		{"one requisite zone still spreads replicas over every zone", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 3, Requisite: []map[string]string{zone("zone-a")}},
			[]string{"a1", "c1", "b2"}, nil},
		{"two zones: third replica on another node", threeZonesTwoNodes[:4],
			controller.Placement{Size: gib, Replicas: 3}, []string{"b2", "a1", "a2"}, nil},
		{"one zone: replicas on distinct nodes", threeZonesTwoNodes[:2],
			controller.Placement{Size: gib, Replicas: 2}, []string{"a1", "a2"}, nil},
		{"five replicas on six nodes", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 5}, []string{"c1", "b2", "a1", "c2", "a2"}, nil},
		{"node without room is skipped", threeZonesTwoNodes,
			controller.Placement{Size: 7 * gib, Replicas: 2}, []string{"c1", "b2"}, nil},
		{"custom topology key spreads over racks", threeZonesTwoNodes[:2],
			controller.Placement{Size: gib, Replicas: 2, TopologyKey: "rack"}, []string{"a1", "a2"}, nil},
		{"not enough nodes", threeZonesTwoNodes[:2],
			controller.Placement{Size: gib, Replicas: 3}, nil, controller.ErrNoPlacement},
		{"not enough nodes with room", threeZonesTwoNodes,
			controller.Placement{Size: 8 * gib, Replicas: 3}, nil, controller.ErrNoPlacement},
		{"requisite matches no node", threeZonesTwoNodes,
			controller.Placement{Size: gib, Replicas: 3, Requisite: []map[string]string{zone("zone-x")}},
			nil, controller.ErrNoPlacement},
		{"larger than any node", threeZonesTwoNodes,
			controller.Placement{Size: 11 * gib, Replicas: 1}, nil, controller.ErrCapacityOutOfRange},
		{"no nodes", nil, controller.Placement{Size: gib, Replicas: 1}, nil, controller.ErrNoPlacement},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := controller.Place(tc.candidates, tc.req)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Place: error %v, want %v", err, tc.wantErr)
			}
			ids := make([]string, 0, len(got))
			for _, c := range got {
				ids = append(ids, c.NodeID)
			}
			if tc.wantErr == nil && !slices.Equal(ids, tc.want) {
				t.Errorf("Place = %v, want %v", ids, tc.want)
			}
		})
	}
}
