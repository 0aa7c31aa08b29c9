package demo

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

const (
	// warmUp is how long the pod writes before the zone is lost.
	warmUp = time.Second
	// recoveryTimeout bounds the wait for a new primary, the first write
	// it acknowledges and a replacement replica in sync.
	recoveryTimeout = 30 * time.Second
	// pollInterval is how often the controller and the primary are asked
	// how the volume is doing.
	pollInterval = 50 * time.Millisecond
	// dropGrace is how long the demo waits, once the volume is whole
	// again, for the controller to drop the dead replicas from the layout.
	dropGrace = 2 * time.Second
	// stopWritesTimeout bounds the wait for the pod's writers to return:
	// once the volume is served again, a write takes milliseconds. When
	// it is not, the writers stay blocked until the node agent serving
	// the mount stops, at the end of the cleanup.
	stopWritesTimeout = 5 * time.Second
)

// failover is what the demo saw of one zone loss.
type failover struct {
	kill     localcluster.ZoneKill
	before   *apiv1.Layout
	after    *apiv1.Layout
	promoted time.Time // when the controller's layout first named another primary
	promotee string    // the primary it named
	epoch    uint64    // and its epoch
	firstAck ack       // the first write the new primary acknowledged
	ackedBy  string    // the primary in the layout when firstAck was seen
	synced   time.Time // when as many replicas as before were in sync on live nodes
	want     int       // replicas the volume can have again: one per live node at most (I6)
	replaced string    // the node of the replacement replica
	added    time.Time // when the replacement first showed in the layout
}

// loseZone kills every node of the primary's zone while the pod on the
// writer's node writes, and follows the volume until it is served by a
// new primary with every replica in sync.
func (r *run) loseZone(ctx context.Context) error {
	r.say("\n[4/7] Losing the primary's zone while the pod on %s writes", r.writer.ID)
	writes, stopWrites, err := r.startWriting(ctx)
	if err != nil {
		return err
	}
	if err := r.waitInSync(ctx, "before the kill"); err != nil {
		return err
	}
	zone := r.zoneOf(r.layout.GetPrimary())
	if zone == r.writer.Zone {
		return fmt.Errorf("the primary %s moved to the pod's zone %s before the kill", r.layout.GetPrimary(), zone)
	}
	f := &failover{before: r.layout}
	if f.kill, err = r.sys.KillZone(zone); err != nil {
		return err
	}
	r.sayKill(f.kill)
	f.want = min(len(f.before.GetReplicas()), len(r.sys.LiveNodes()))
	if err := r.follow(ctx, f, writes); err != nil {
		return err
	}
	if err := stopWrites.run(ctx); err != nil {
		return err
	}
	r.podWrites, _ = writes.written()
	r.failover = f
	r.reportFailover(f, writes)
	r.layout = f.after
	r.showLayout()
	return r.unmountFrom(ctx, r.mount)
}

// startWriting starts the pod's writers on the mounted volume and lets
// them write for warmUp. The undo it returns stops them.
func (r *run) startWriting(ctx context.Context) (*podWrites, *undo, error) {
	writes, err := startPodWrites(r.mount.target)
	if err != nil {
		return nil, nil, fmt.Errorf("start the pod's writers: %w", err)
	}
	stop := r.td.push("Stop the pod's writers", func(context.Context) error { return writes.stop(stopWritesTimeout) })
	r.say("   The pod writes below %s: %d probes, each a %d-byte O_DSYNC write every %s, timestamped when",
		podWritesDir, probes, probeRecord, probeInterval)
	r.say("   issued and when acknowledged; and a %d KiB file, fsynced, every %s.", writtenFile>>10, fileInterval)
	if err := sleepCtx(ctx, warmUp); err != nil {
		return nil, nil, err
	}
	return writes, stop, writes.failed()
}

// reportFailover sums up the failover as the pod saw it.
func (r *run) reportFailover(f *failover, writes *podWrites) {
	_, acks := writes.written()
	from, stall := longestStall(acks)
	at := func(t time.Time) string { return offset(t.Sub(f.kill.Sent)) }
	a := f.firstAck
	after := 0
	for _, x := range acks {
		if x.issued.After(f.kill.Gone) {
			after++
		}
	}
	r.say("   Kill to first write acknowledged on the new primary %s: %s", f.ackedBy, seconds(a.done.Sub(f.kill.Sent)))
	r.say("     (the probes' clocks, from the first SIGKILL to the earliest acknowledgement of a probe write issued")
	r.say("     once every killed process had exited; that write was issued at %s and acknowledged at %s)", at(a.issued), at(a.done))
	r.say("   New primary in the controller's layout at %s; %s.", at(f.promoted), f.replacement())
	r.say("   The pod's writes paused for %s at most (no acknowledgement from %s to %s) and none failed:",
		seconds(stall), at(from), at(from.Add(stall)))
	r.say("   %d probe writes acknowledged, %d of them issued after the kill, and %d files of %d KiB.",
		len(acks), after, len(r.podWrites)-probes, writtenFile>>10)
}

// waitInSync refreshes the layout, waiting until every replica on a live
// node is in sync: before the kill, since a zone loss is survivable only
// with a replica in sync elsewhere; before comparing replicas, since
// the controller may have moved one meanwhile.
func (r *run) waitInSync(ctx context.Context, before string) error {
	deadline := time.Now().Add(recoveryTimeout)
	for said := false; ; {
		if err := r.locate(ctx); err != nil {
			return err
		}
		var behind []string
		for _, rep := range r.layout.GetReplicas() {
			if rep.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC && r.alive(rep.GetNodeId()) {
				behind = append(behind, rep.GetNodeId()+" "+stateName(rep.GetState()))
			}
		}
		switch {
		case len(behind) == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("volume %s: replicas not in sync after %s: %s", r.vol.GetVolumeId(), recoveryTimeout, strings.Join(behind, ", "))
		case !said:
			r.say("   Waiting for every replica to be in sync %s: %s.", before, strings.Join(behind, ", "))
			said = true
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			return err
		}
	}
}

// replacement says how the volume got its replicas back.
func (f *failover) replacement() string {
	if f.replaced == "" {
		return fmt.Sprintf("no node is left for a replacement, the volume keeps %d replicas in sync", f.want)
	}
	return fmt.Sprintf("replacement on %s in sync at %s", f.replaced, offset(f.synced.Sub(f.kill.Sent)))
}

// sayKill narrates the zone loss.
func (r *run) sayKill(k localcluster.ZoneKill) {
	var nodes []string
	for _, n := range k.Nodes {
		nodes = append(nodes, fmt.Sprintf("%s (pid %d)", n.ID, n.PID()))
	}
	r.say("   +0.00s  SIGKILL to every node of %s: %s; all gone after %s", k.Zone, strings.Join(nodes, ", "),
		millis(k.Gone.Sub(k.Sent)))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// follow polls the controller for the volume's layout and the primary for
// the replacement's progress, narrating each change, until the volume is
// whole again and the pod has had a write acknowledged by the new
// primary.
func (r *run) follow(ctx context.Context, f *failover, writes *podWrites) error {
	reg, err := r.sys.Controller.DialRegistry()
	if err != nil {
		return err
	}
	defer reg.Close()
	w := &watch{r: r, f: f, reg: reg, meter: newMeter(r.o.Out), last: f.before, seen: map[string]bool{}}
	deadline := time.Now().Add(recoveryTimeout)
	for {
		if err := writes.failed(); err != nil {
			w.meter.erase()
			return fmt.Errorf("a write of the pod failed during the failover: %w", err)
		}
		w.poll(ctx, writes)
		if w.recovered(time.Now()) {
			w.meter.erase()
			f.after = w.last
			return nil
		}
		if time.Now().After(deadline) {
			w.meter.erase()
			return fmt.Errorf("%s after the loss of %s: %s", recoveryTimeout, f.kill.Zone, w.missing())
		}
		if err := sleepCtx(ctx, pollInterval); err != nil {
			w.meter.erase()
			return err
		}
	}
}

// watch is the state of follow.
type watch struct {
	r     *run
	f     *failover
	reg   *api.RegistryClient
	meter *meter
	last  *apiv1.Layout
	acked bool
	seen  map[string]bool // messages printed once: silent nodes, errors
	sync  syncRate
}

// poll takes one look at the controller, the primary and the pod.
func (w *watch) poll(ctx context.Context, writes *podWrites) {
	now := time.Now()
	resp, err := w.reg.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: w.r.vol.GetVolumeId()})
	switch {
	case err != nil:
		w.once(now, "LocateVolume answers "+status.Code(err).String()+": "+status.Convert(err).Message())
	default:
		if silent := resp.GetSilentNodeIds(); len(silent) > 0 {
			w.once(now, "the controller counts "+strings.Join(silent, ", ")+" as silent (no heartbeat)")
		}
		w.layoutChanged(now, resp.GetLayout())
	}
	if !w.acked {
		_, acks := writes.written()
		if a, ok := firstAckAfter(acks, w.f.kill.Gone); ok {
			w.acked, w.f.firstAck, w.f.ackedBy = true, a, w.last.GetPrimary()
			w.event(a.done, fmt.Sprintf("first write acknowledged on the new primary %s (issued at %s)", w.f.ackedBy, w.since(a.issued)))
		}
	}
	w.showSync(ctx, now)
}

// once prints msg the first time it is seen.
func (w *watch) once(now time.Time, msg string) {
	if !w.seen[msg] {
		w.seen[msg] = true
		w.event(now, msg)
	}
}

func (w *watch) event(at time.Time, msg string) {
	w.meter.print(fmt.Sprintf("   %s  %s", w.since(at), msg))
}

// since is a moment relative to the kill.
func (w *watch) since(t time.Time) string { return offset(t.Sub(w.f.kill.Sent)) }

// offset writes a time relative to the kill to the hundredth of a
// second, signed: +2.31s.
func offset(d time.Duration) string {
	return fmt.Sprintf("%+.2fs", d.Round(10*time.Millisecond).Seconds())
}

// layoutChanged narrates what changed since the last layout seen.
func (w *watch) layoutChanged(now time.Time, l *apiv1.Layout) {
	if l == nil || l.GetEpoch() == w.last.GetEpoch() {
		return
	}
	if l.GetPrimary() != w.f.before.GetPrimary() && w.f.promoted.IsZero() {
		w.f.promoted, w.f.promotee, w.f.epoch = now, l.GetPrimary(), l.GetEpoch()
	}
	w.event(now, describeChange(w.last, l, w.r.zoneOf))
	w.noteReplacement(now, w.last, l)
	if w.f.synced.IsZero() && w.liveInSync(l) >= w.f.want {
		w.f.synced = now
	}
	w.last = l
}

// noteReplacement remembers the replacement replica, and when it goes in
// sync draws its bar full with how long the copy took.
func (w *watch) noteReplacement(now time.Time, old, cur *apiv1.Layout) {
	was := replicaStates(old)
	for _, rep := range cur.GetReplicas() {
		id := rep.GetNodeId()
		if _, ok := replicaStates(w.f.before)[id]; !ok && w.f.replaced == "" {
			w.f.replaced, w.f.added = id, now
		}
		if id != w.f.replaced || rep.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC || was[id] == stateName(rep.GetState()) {
			continue
		}
		size := w.r.layout.GetSizeBytes()
		w.meter.done(fmt.Sprintf("   %s  %s synced  %s  %s in %s", w.since(now), id, bar(size, size, 30), mib(size),
			seconds(now.Sub(w.f.added))))
	}
}

// liveInSync counts the layout's in-sync replicas on nodes that run.
func (w *watch) liveInSync(l *apiv1.Layout) int {
	n := 0
	for _, rep := range l.GetReplicas() {
		if rep.GetState() == apiv1.ReplicaState_REPLICA_STATE_IN_SYNC && w.r.alive(rep.GetNodeId()) {
			n++
		}
	}
	return n
}

// alive says whether a node of the cluster still runs.
func (r *run) alive(nodeID string) bool {
	n := r.sys.Node(nodeID)
	return n != nil && n.Alive()
}

// zoneOf names a node's zone.
func (r *run) zoneOf(nodeID string) string {
	if n := r.sys.Node(nodeID); n != nil {
		return n.Zone
	}
	return "?"
}

// describeChange says how layout cur differs from old, in one line.
func describeChange(old, cur *apiv1.Layout, zoneOf func(string) string) string {
	var changes []string
	if old.GetPrimary() != cur.GetPrimary() {
		changes = append(changes, fmt.Sprintf("primary %s (%s) -> %s (%s)",
			old.GetPrimary(), zoneOf(old.GetPrimary()), cur.GetPrimary(), zoneOf(cur.GetPrimary())))
	}
	before := replicaStates(old)
	for _, rep := range cur.GetReplicas() {
		id, state := rep.GetNodeId(), stateName(rep.GetState())
		switch was, ok := before[id]; {
		case !ok:
			changes = append(changes, fmt.Sprintf("replacement replica on %s (%s), %s", id, rep.GetZone(), state))
		case was != state:
			changes = append(changes, fmt.Sprintf("%s %s -> %s", id, was, state))
		}
		delete(before, id)
	}
	for _, id := range slices.Sorted(maps.Keys(before)) {
		changes = append(changes, fmt.Sprintf("%s removed", id))
	}
	if len(changes) == 0 {
		changes = append(changes, "no change in placement")
	}
	return fmt.Sprintf("epoch %d -> %d: %s", old.GetEpoch(), cur.GetEpoch(), strings.Join(changes, "; "))
}

func replicaStates(l *apiv1.Layout) map[string]string {
	m := map[string]string{}
	for _, rep := range l.GetReplicas() {
		m[rep.GetNodeId()] = stateName(rep.GetState())
	}
	return m
}

// stateName is a replica state as the narration writes it: "in sync".
func stateName(s apiv1.ReplicaState) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "REPLICA_STATE_")), "_", " ")
}

// recovered says whether the volume is whole again: a live primary, as
// many replicas as before in sync on live nodes, and a write acknowledged
// by the new primary. The controller drops the dead replicas from the
// layout once the replacement is in sync; the demo gives it dropGrace to
// do so, to show the final layout.
func (w *watch) recovered(now time.Time) bool {
	l := w.last
	if !w.acked || w.f.synced.IsZero() || !w.r.alive(l.GetPrimary()) {
		return false
	}
	return w.liveInSync(l) == len(l.GetReplicas()) || now.Sub(w.f.synced) > dropGrace
}

// missing says what recovery still lacks, for the error when it times out.
func (w *watch) missing() string {
	l := w.last
	var lacks []string
	if p := w.r.sys.Node(l.GetPrimary()); p == nil || !p.Alive() {
		lacks = append(lacks, fmt.Sprintf("the layout (epoch %d) still names the dead %s primary", l.GetEpoch(), l.GetPrimary()))
	}
	if !w.acked {
		lacks = append(lacks, "no write issued after the kill was acknowledged")
	}
	for _, rep := range l.GetReplicas() {
		if n := w.r.sys.Node(rep.GetNodeId()); n == nil || !n.Alive() {
			lacks = append(lacks, fmt.Sprintf("replica on the dead %s still listed %s", rep.GetNodeId(), stateName(rep.GetState())))
		} else if rep.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC {
			lacks = append(lacks, fmt.Sprintf("replica on %s %s", rep.GetNodeId(), stateName(rep.GetState())))
		}
	}
	return strings.Join(lacks, "; ")
}

// showSync draws the progress of the first syncing replica, as the
// primary reports it.
func (w *watch) showSync(ctx context.Context, now time.Time) {
	p := w.r.sys.Node(w.last.GetPrimary())
	if p == nil || !p.Alive() {
		return
	}
	for _, rep := range w.last.GetReplicas() {
		if rep.GetState() != apiv1.ReplicaState_REPLICA_STATE_SYNCING {
			continue
		}
		st, ok := replicaStatus(ctx, p, w.r.vol.GetVolumeId(), rep.GetNodeId())
		if !ok {
			return
		}
		w.meter.show(now, w.syncLine(now, rep, st))
		return
	}
}

// syncLine draws one replica's resync progress: its bar, bytes and rate.
func (w *watch) syncLine(now time.Time, rep *apiv1.ReplicaInfo, st *apiv1.ReplicaStatus) string {
	done, total := st.GetSyncedBytes(), st.GetTotalBytes()
	speed := w.sync.observe(rep.GetNodeId(), now, done)
	line := fmt.Sprintf("   %s  %s syncing %s  %s of %s", w.since(now), rep.GetNodeId(), bar(done, total, 30), mib(done), mib(total))
	if speed != "" {
		line += ", " + speed
	}
	return line
}

// replicaStatus asks the primary how one replica is doing.
func replicaStatus(ctx context.Context, primary *localcluster.Node, volumeID, nodeID string) (*apiv1.ReplicaStatus, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := primary.Client.GetVolume(ctx, &apiv1.GetVolumeRequest{VolumeId: volumeID})
	if err != nil {
		return nil, false
	}
	for _, st := range resp.GetVolume().GetReplicas() {
		if st.GetNodeId() == nodeID {
			return st, true
		}
	}
	return nil, false
}

// syncRate measures a replica's resync speed from the first sample seen.
type syncRate struct {
	node  string
	start time.Time
	bytes int64
}

func (s *syncRate) observe(node string, now time.Time, done int64) string {
	if s.node != node {
		*s = syncRate{node: node, start: now, bytes: done}
		return ""
	}
	return rate(done-s.bytes, now.Sub(s.start))
}

// millis is a short duration in milliseconds.
func millis(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
