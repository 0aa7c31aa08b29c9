package localcluster

import (
	"reflect"
	"testing"
)

func TestSpreadLaysOutNodesZoneByZone(t *testing.T) {
	tests := []struct {
		name         string
		nodes, zones int
		want         []NodeSpec
	}{
		{"two per zone", 6, 3, []NodeSpec{
			{"node-a1", "zone-a", "127.0.0.11"}, {"node-a2", "zone-a", "127.0.0.12"},
			{"node-b1", "zone-b", "127.0.0.13"}, {"node-b2", "zone-b", "127.0.0.14"},
			{"node-c1", "zone-c", "127.0.0.15"}, {"node-c2", "zone-c", "127.0.0.16"},
		}},
		{"first zones take the remainder", 4, 3, []NodeSpec{
			{"node-a1", "zone-a", "127.0.0.11"}, {"node-a2", "zone-a", "127.0.0.12"},
			{"node-b1", "zone-b", "127.0.0.13"}, {"node-c1", "zone-c", "127.0.0.14"},
		}},
		{"one zone", 1, 1, []NodeSpec{{"node-a1", "zone-a", "127.0.0.11"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Spread(tt.nodes, tt.zones)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Spread(%d, %d) = %v, want %v", tt.nodes, tt.zones, got, tt.want)
			}
		})
	}
}

func TestSpreadRefusesImpossibleLayouts(t *testing.T) {
	for _, tt := range []struct{ nodes, zones int }{{2, 3}, {3, 0}, {30, 27}, {245, 3}} {
		if got, err := Spread(tt.nodes, tt.zones); err == nil {
			t.Errorf("Spread(%d, %d) = %v, want an error", tt.nodes, tt.zones, got)
		}
	}
}
