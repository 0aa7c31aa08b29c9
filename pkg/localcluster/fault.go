package localcluster

import (
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// ZoneKill records the loss of a zone: which node processes were killed,
// when the first SIGKILL was sent, and when the last of them had exited.
type ZoneKill struct {
	Zone  string
	Nodes []*Node
	// Sent is when the first SIGKILL was sent: the moment the zone was
	// lost, as far as the rest of the system can tell.
	Sent time.Time
	// Gone is when every killed process had exited, so none of them can
	// answer anything sent after it.
	Gone time.Time
}

// KillZone loses a whole zone at once: it sends SIGKILL to every node
// agent of zone, one right after the other, then waits until each has
// exited. A zone with no running node is an error.
func (c *Cluster) KillZone(zone string) (ZoneKill, error) {
	k := ZoneKill{Zone: zone}
	for _, n := range c.Nodes {
		if n.Zone == zone && n.Alive() {
			k.Nodes = append(k.Nodes, n)
		}
	}
	if len(k.Nodes) == 0 {
		return k, fmt.Errorf("kill zone %s: no node agent runs there", zone)
	}
	k.Sent = time.Now()
	for _, n := range k.Nodes {
		n.proc.sendKill()
	}
	for _, n := range k.Nodes {
		<-n.proc.done
	}
	k.Gone = time.Now()
	for _, n := range k.Nodes {
		klog.V(2).InfoS("Killed node agent", "node", n.ID, "zone", zone, "pid", n.PID())
	}
	return k, nil
}

// Alive says whether the node process is still running.
func (n *Node) Alive() bool {
	select {
	case <-n.proc.done:
		return false
	default:
		return true
	}
}

// LiveNodes returns the nodes whose process still runs, in start order.
func (c *Cluster) LiveNodes() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Alive() {
			out = append(out, n)
		}
	}
	return out
}
