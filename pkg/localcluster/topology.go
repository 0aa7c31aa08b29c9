package localcluster

import "fmt"

// firstSpreadIP is the last byte of the first node's loopback address in
// Spread: 127.0.0.11, then .12 and on.
const firstSpreadIP = 11

// Spread lays out nodes over zones named zone-a, zone-b, ... as evenly
// as possible, the first zones taking one more when it does not divide.
// Nodes are named for their zone and rank in it (node-a1, node-a2,
// node-b1 ...), listed zone by zone, and listen on 127.0.0.11 onwards.
func Spread(nodes, zones int) ([]NodeSpec, error) {
	switch {
	case zones < 1 || zones > 26:
		return nil, fmt.Errorf("%d zones: between 1 and 26 are possible", zones)
	case nodes < zones:
		return nil, fmt.Errorf("%d nodes cannot fill %d zones", nodes, zones)
	case nodes > 255-firstSpreadIP:
		return nil, fmt.Errorf("%d nodes: at most %d fit on 127.0.0.x", nodes, 255-firstSpreadIP)
	}
	specs := make([]NodeSpec, 0, nodes)
	for z := range zones {
		zone := string(rune('a' + z))
		for rank := 1; z+(rank-1)*zones < nodes; rank++ {
			specs = append(specs, NodeSpec{ID: fmt.Sprintf("node-%s%d", zone, rank), Zone: "zone-" + zone})
		}
	}
	for i := range specs {
		specs[i].IP = fmt.Sprintf("127.0.0.%d", firstSpreadIP+i)
	}
	return specs, nil
}
