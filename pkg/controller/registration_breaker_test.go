package controller_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
)

// TestBreakerRegistrationCannotAimOrphanCollectionAtAnotherNode: a node
// (here a2, whose certificate lets it register as a2 only) registers
// with another node's Node API address. The controller then lists the
// replicas at that address as a2's and deletes every one whose volume
// does not list a2: all of a1's replicas, while the records still name
// a1 InSync (and primary). Live on a TLS cluster, one RegisterNode call
// with a stolen node certificate wiped every replica of the node that
// was primary of every volume; the volumes stalled while the controller
// reported "3 of 3 replicas in sync".
func TestBreakerRegistrationCannotAimOrphanCollectionAtAnotherNode(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-victim")
	var victim string
	for _, r := range v.Layout.Replicas {
		if r.NodeID == "a1" || r.NodeID == "a2" {
			victim = r.NodeID
		}
	}
	attacker := map[string]string{"a1": "a2", "a2": "a1"}[victim]
	if victim == "" {
		t.Fatalf("no replica in zone-a: %+v", v.Layout.Replicas)
	}
	victimAddr := controllertest.APIAddress(victim)
	if !slices.Contains(e.Nodes.Replicas(victimAddr), v.ID) {
		t.Fatalf("%s holds no replica of %s", victim, v.ID)
	}

	reg := controllertest.Registration(attacker, "zone-a", 10*controllertest.GiB)
	reg.APIAddress = victimAddr
	if err := e.C.RegisterNode(ctx, reg); !errors.Is(err, controller.ErrAddressInUse) {
		t.Errorf("%s registering %s's API address: %v, want ErrAddressInUse", attacker, victim, err)
	}

	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if !slices.Contains(e.Nodes.Replicas(victimAddr), v.ID) {
			t.Fatalf("%s registering with %s's API address made the controller delete %s's replica of %s (record: %+v)",
				attacker, victim, victim, v.ID, record(t, e, v.ID).Layout.Replicas)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
