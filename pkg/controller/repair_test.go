package controller_test

import (
	"slices"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// pass moves the clock past the heartbeat timeout with only the live
// nodes heartbeating, then runs one repair pass.
func pass(t *testing.T, e *controllertest.Env, live ...string) {
	t.Helper()
	e.Clock.Advance(controller.DefaultHeartbeatTimeout + time.Second)
	for _, id := range live {
		if err := e.C.Heartbeat(id, 10*controllertest.GiB); err != nil {
			t.Fatalf("heartbeat of %s: %v", id, err)
		}
	}
	e.C.RepairOnce(ctx)
}

func record(t *testing.T, e *controllertest.Env, id string) store.Volume {
	t.Helper()
	v, err := e.C.GetVolume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func states(l replication.Layout) map[string]replication.ReplicaState {
	out := map[string]replication.ReplicaState{}
	for _, r := range l.Replicas {
		out[r.NodeID] = r.State
	}
	return out
}

func sameStates(got replication.Layout, want map[string]replication.ReplicaState) bool {
	g := states(got)
	if len(g) != len(want) {
		return false
	}
	for k, v := range want {
		if g[k] != v {
			return false
		}
	}
	return true
}

// The primary's whole zone is lost: an InSync replica of a healthy zone
// takes over under a new epoch, a replacement is placed in a surviving
// zone, the lost replica leaves the layout once the volume is whole, and
// when the zone returns the volume spreads over three zones again.
func TestZoneLossFailoverReplacementAndRebalance(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	if v.Layout.Primary != "a1" {
		t.Fatalf("primary %s, want a1", v.Layout.Primary)
	}
	rest := []string{"b1", "b2", "c1", "c2"}

	pass(t, e, rest...)
	v = record(t, e, v.ID)
	if v.Layout.Primary != "b1" || v.Layout.Epoch != 2 ||
		!sameStates(v.Layout, map[string]replication.ReplicaState{"a1": "Faulted", "b1": "InSync", "c1": "InSync"}) {
		t.Fatalf("after zone-a loss: primary %s epoch %d replicas %v; want b1 at epoch 2, a1 Faulted",
			v.Layout.Primary, v.Layout.Epoch, states(v.Layout))
	}
	if l, ok := e.Nodes.Layout(controllertest.APIAddress("b1"), v.ID); !ok || l.Epoch != 2 || l.Primary != "b1" {
		t.Fatalf("new primary holds layout %+v, want epoch 2", l)
	}

	pass(t, e, rest...)
	v = record(t, e, v.ID)
	if !sameStates(v.Layout, map[string]replication.ReplicaState{"a1": "Faulted", "b1": "InSync", "c1": "InSync", "b2": "Syncing"}) {
		t.Fatalf("replacement: replicas %v, want b2 Syncing", states(v.Layout))
	}
	if !slices.Contains(e.Nodes.Replicas(controllertest.APIAddress("b2")), v.ID) {
		t.Fatal("b2 holds no replica")
	}
	if _, err := e.C.ReplicaSynced(ctx, v.ID, v.Layout.Epoch, "b2"); err != nil {
		t.Fatal(err)
	}
	pass(t, e, rest...)
	v = record(t, e, v.ID)
	if !sameStates(v.Layout, map[string]replication.ReplicaState{"b1": "InSync", "c1": "InSync", "b2": "InSync"}) {
		t.Fatalf("after the copy: replicas %v, want a1 gone", states(v.Layout))
	}

	// Zone a comes back: a1's leftover replica is collected when it
	// registers, and the volume moves one replica back to zone a.
	for _, id := range []string{"a1", "a2"} {
		if err := e.C.RegisterNode(ctx, controllertest.Registration(id, "zone-a", 10*controllertest.GiB)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "a1's orphan replica deleted", func() bool {
		return !slices.Contains(e.Nodes.Replicas(controllertest.APIAddress("a1")), v.ID)
	})
	all := append(rest, "a1", "a2")
	pass(t, e, all...)
	v = record(t, e, v.ID)
	var inA string
	for _, r := range v.Layout.Replicas {
		if r.Zone == "zone-a" {
			inA = r.NodeID
		}
	}
	if inA == "" || states(v.Layout)[inA] != replication.Syncing || len(v.Layout.Replicas) != 4 {
		t.Fatalf("rebalance: replicas %v, want a Syncing replica in zone-a", states(v.Layout))
	}
	if _, err := e.C.ReplicaSynced(ctx, v.ID, v.Layout.Epoch, inA); err != nil {
		t.Fatal(err)
	}
	pass(t, e, all...)
	v = record(t, e, v.ID)
	if !sameStates(v.Layout, map[string]replication.ReplicaState{"b1": "InSync", "c1": "InSync", inA: "InSync"}) {
		t.Fatalf("after rebalance: replicas %v, want b1, c1 and %s", states(v.Layout), inA)
	}
	if slices.Contains(e.Nodes.Replicas(controllertest.APIAddress("b2")), v.ID) {
		t.Fatal("the surplus replica on b2 was not deleted")
	}
}

// With every InSync replica's node dead the volume waits: no replica is
// marked Faulted, and the first InSync one to return takes over.
func TestLostVolumeWaitsForAnInSyncReplica(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	pass(t, e, "a2", "b2", "c2")
	got := record(t, e, v.ID)
	if got.Layout.Epoch != v.Layout.Epoch || controller.InSyncCount(got.Layout) != 3 {
		t.Fatalf("with every replica lost the record changed: epoch %d, replicas %v", got.Layout.Epoch, states(got.Layout))
	}
	pass(t, e, "a2", "b2", "c2", "c1")
	got = record(t, e, v.ID)
	if got.Layout.Primary != "c1" || states(got.Layout)["a1"] != replication.Faulted {
		t.Fatalf("c1 returned: primary %s, replicas %v; want c1 primary and a1 Faulted", got.Layout.Primary, states(got.Layout))
	}
}

// A replica whose node returns is resumed (Syncing) rather than left
// Faulted, and once the volume is whole again the surplus copy goes.
func TestReturningReplicaIsResumedAndSurplusRemoved(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	pass(t, e, "a1", "a2", "b1", "b2", "c2")
	got := record(t, e, v.ID)
	if states(got.Layout)["c1"] != replication.Faulted {
		t.Fatalf("c1's node is dead but the layout says %v", states(got.Layout))
	}
	pass(t, e, "a1", "a2", "b1", "b2", "c2")
	got = record(t, e, v.ID)
	if states(got.Layout)["c2"] != replication.Syncing {
		t.Fatalf("no replacement in zone-c: %v", states(got.Layout))
	}
	pass(t, e, "a1", "a2", "b1", "b2", "c2", "c1")
	got = record(t, e, v.ID)
	if states(got.Layout)["c1"] != replication.Syncing {
		t.Fatalf("c1 is back but not resumed: %v", states(got.Layout))
	}
	if _, err := e.C.ReplicaSynced(ctx, v.ID, got.Layout.Epoch, "c1"); err != nil {
		t.Fatal(err)
	}
	pass(t, e, "a1", "a2", "b1", "b2", "c2", "c1")
	got = record(t, e, v.ID)
	if !sameStates(got.Layout, map[string]replication.ReplicaState{"a1": "InSync", "b1": "InSync", "c1": "InSync"}) {
		t.Fatalf("after c1 caught up: %v, want c2's copy removed", states(got.Layout))
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A leader killed while creating a volume leaves a record whose replicas
// were never made; the layout may have changed since (here, the epoch is
// 3). The provisioner's retry must make them, not take the record for a
// finished create.
func TestRepeatedCreateMakesReplicasAnInterruptedCreateLeftOut(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	for _, r := range v.Layout.Replicas {
		e.Nodes.Drop(controllertest.APIAddress(r.NodeID), v.ID)
	}
	for range 2 {
		if _, err := store.BumpEpoch(ctx, e.Store, v.ID, func(*store.Volume) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	leader := controller.New(controller.Options{Store: e.Store, DialNode: e.Nodes.Dial, Now: e.Clock.Now})
	defer leader.Close()
	for _, n := range controllertest.SixNodes {
		if err := leader.RegisterNode(ctx, controllertest.Registration(n.ID, n.Zone, 10*controllertest.GiB)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := leader.CreateVolume(ctx, volumeRequest("pvc-1"))
	if err != nil || got.ID != v.ID {
		t.Fatalf("repeated CreateVolume = %s, %v; want %s", got.ID, err, v.ID)
	}
	for _, r := range v.Layout.Replicas {
		addr := controllertest.APIAddress(r.NodeID)
		if !slices.Contains(e.Nodes.Replicas(addr), v.ID) {
			t.Errorf("%s holds no replica after the repeated create", r.NodeID)
		}
	}
	if l, ok := e.Nodes.Layout(controllertest.APIAddress(v.Layout.Primary), v.ID); !ok || l.Epoch != 3 {
		t.Errorf("primary holds layout %+v, want epoch 3", l)
	}
}

// A primary's agent that restarts before it is declared dead registers
// again and has lost its layouts; if the resend at registration fails (its
// API not answering yet), the repair loop sends the layout again.
func TestRestartedPrimaryGetsItsLayoutAgain(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	all := []string{"a1", "a2", "b1", "b2", "c1", "c2"}
	pass(t, e, all...)
	addr := controllertest.APIAddress(v.Layout.Primary)
	e.Nodes.SetDown(addr, true) // the restarted agent's API does not answer yet
	e.Nodes.Restart(addr)
	if err := e.C.RegisterNode(ctx, controllertest.Registration("a1", "zone-a", 10*controllertest.GiB)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the failing resend go by
	e.Nodes.SetDown(addr, false)
	pass(t, e, all...)
	if l, ok := e.Nodes.Layout(addr, v.ID); !ok || l.Epoch != v.Layout.Epoch {
		t.Fatalf("restarted primary holds layout %+v (%v), want epoch %d", l, ok, v.Layout.Epoch)
	}
}

// A node that heartbeats but refuses to create a replica is not chosen
// again at once: the replacement goes elsewhere on the next pass.
func TestReplacementAvoidsANodeThatFailedToCreate(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	rest := []string{"a1", "a2", "b1", "b2", "c2"}
	pass(t, e, rest...) // c1 dead: faulted
	e.Nodes.SetDown(controllertest.APIAddress("c2"), true)
	pass(t, e, rest...) // the replacement on c2 fails and is removed
	got := record(t, e, v.ID)
	if _, ok := states(got.Layout)["c2"]; ok {
		t.Fatalf("c2 stayed in the layout after its create failed: %v", states(got.Layout))
	}
	pass(t, e, rest...)
	got = record(t, e, v.ID)
	st := states(got.Layout)
	if _, ok := st["c2"]; ok {
		t.Fatalf("c2 was chosen again right after failing: %v", st)
	}
	if st["a2"] != replication.Syncing && st["b2"] != replication.Syncing {
		t.Fatalf("no replacement elsewhere: %v", st)
	}
}
