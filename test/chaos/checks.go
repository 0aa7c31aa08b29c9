package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// checkReplicas asks every InSync replica's node for its checksum: all
// must match (I1).
func (c *cluster) checkReplicas(ctx context.Context, v *volume, l *apiv1.Layout) []string {
	sums := map[string]string{}
	var out []string
	for _, r := range l.GetReplicas() {
		if r.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC {
			continue
		}
		n := c.node(r.GetNodeId())
		if n == nil {
			out = append(out, fmt.Sprintf("volume %s: InSync replica on unknown node %q", v.name, r.GetNodeId()))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := n.client.ChecksumReplica(cctx, &apiv1.ChecksumReplicaRequest{VolumeId: v.id})
		cancel()
		if err != nil {
			out = append(out, fmt.Sprintf("volume %s: checksum on %s: %v", v.name, n.id, err))
			continue
		}
		sums[n.id] = resp.GetSha256()
	}
	first := ""
	for _, s := range sums {
		if first == "" {
			first = s
		}
		if s != first {
			out = append(out, fmt.Sprintf("volume %s: InSync replicas differ (I1): %v; %s", v.name, sums, describeLayout(l)))
			break
		}
	}
	return out
}

// checkPlacement checks I6 on a layout, with every node live and with
// room: replicas in distinct zones, never two on one node. Faulted
// entries still listed are named, not counted.
func (c *cluster) checkPlacement(v *volume, l *apiv1.Layout) []string {
	zones, nodes := map[string]int{}, map[string]int{}
	var out []string
	for _, r := range l.GetReplicas() {
		if r.GetState() == apiv1.ReplicaState_REPLICA_STATE_FAULTED {
			continue
		}
		zones[r.GetZone()]++
		nodes[r.GetNodeId()]++
	}
	for id, k := range nodes {
		if k > 1 {
			out = append(out, fmt.Sprintf("volume %s: %d replicas on node %s (I6): %s", v.name, k, id, describeLayout(l)))
		}
	}
	for z, k := range zones {
		if k > 1 && len(zones) < len(c.spec.zones) {
			out = append(out, fmt.Sprintf("volume %s: %d replicas in %s while a zone with live nodes holds none (I6): %s", v.name, k, z, describeLayout(l)))
		}
	}
	return out
}

// monitor polls the controller's records while a schedule runs and checks
// what must hold at every moment: epochs never go back (I3), the primary
// is an InSync replica (I4), no node holds two replicas of a volume (I6).
type monitor struct {
	c    *cluster
	vols []*volume
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	epochs   map[string]uint64
	findings []string
	seen     map[string]bool
	// layouts keeps each distinct layout seen, per volume, for reports.
	layouts map[string][]string
	last    map[string]string
}

func startMonitor(ctx context.Context, c *cluster, vols []*volume) *monitor {
	m := &monitor{c: c, vols: vols, stop: make(chan struct{}), done: make(chan struct{}),
		epochs: map[string]uint64{}, seen: map[string]bool{}, layouts: map[string][]string{}, last: map[string]string{}}
	go m.loop(ctx)
	return m
}

func (m *monitor) loop(ctx context.Context) {
	defer close(m.done)
	start := time.Now()
	for {
		for _, v := range m.vols {
			if resp, err := m.c.locate(ctx, v.id); err == nil {
				m.observe(v, resp.GetLayout(), time.Since(start))
			}
		}
		select {
		case <-m.stop:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *monitor) observe(v *volume, l *apiv1.Layout, at time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	desc := describeLayout(l)
	if m.last[v.name] != desc {
		m.last[v.name] = desc
		m.layouts[v.name] = append(m.layouts[v.name], fmt.Sprintf("%8.2fs  %s", at.Seconds(), desc))
	}
	report := func(f string) {
		if !m.seen[f] {
			m.seen[f] = true
			m.findings = append(m.findings, fmt.Sprintf("at %.2fs: %s", at.Seconds(), f))
		}
	}
	if l.GetEpoch() < m.epochs[v.id] {
		report(fmt.Sprintf("volume %s: epoch went back from %d to %d (I3): %s", v.name, m.epochs[v.id], l.GetEpoch(), desc))
	}
	m.epochs[v.id] = max(m.epochs[v.id], l.GetEpoch())
	primaryInSync, nodes := false, map[string]bool{}
	for _, r := range l.GetReplicas() {
		if r.GetNodeId() == l.GetPrimary() && r.GetState() == apiv1.ReplicaState_REPLICA_STATE_IN_SYNC {
			primaryInSync = true
		}
		if nodes[r.GetNodeId()] {
			report(fmt.Sprintf("volume %s: two replicas on node %s (I6): %s", v.name, r.GetNodeId(), desc))
		}
		nodes[r.GetNodeId()] = true
	}
	if !primaryInSync {
		report(fmt.Sprintf("volume %s: primary %s is not an InSync replica (I4): %s", v.name, l.GetPrimary(), desc))
	}
}

// halt stops polling and returns the findings and the layout history.
func (m *monitor) halt() ([]string, map[string][]string) {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.findings, m.layouts
}
