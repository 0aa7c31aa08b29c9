package controller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

var ctx = context.Background()

func volumeRequest(name string) controller.VolumeRequest {
	return controller.VolumeRequest{
		Name: name, Size: gib, RequiredBytes: gib, Replicas: 3, MinInSyncReplicas: 2,
		Parameters: map[string]string{"replicas": "3"}, Capabilities: []string{"mount/ext4/SINGLE_NODE_WRITER"},
	}
}

func mustCreate(t *testing.T, e *controllertest.Env, name string) store.Volume {
	t.Helper()
	v, err := e.C.CreateVolume(ctx, volumeRequest(name))
	if err != nil {
		t.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return v
}

func replicaNodes(l replication.Layout) []string {
	var out []string
	for _, r := range l.Replicas {
		out = append(out, r.NodeID)
	}
	return out
}

func TestCreateVolumePlacesReplicasAndLayout(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")

	want := replication.Layout{VolumeID: v.ID, Size: gib, Epoch: 1, Primary: "a1", Replicas: []replication.ReplicaInfo{
		{NodeID: "a1", Zone: "zone-a", Address: "a1.data:7600", State: replication.InSync},
		{NodeID: "b1", Zone: "zone-b", Address: "b1.data:7600", State: replication.InSync},
		{NodeID: "c1", Zone: "zone-c", Address: "c1.data:7600", State: replication.InSync},
	}}
	if !layoutsEqual(v.Layout, want) {
		t.Fatalf("layout %+v, want %+v", v.Layout, want)
	}
	for _, id := range []string{"a1", "b1", "c1"} {
		addr := controllertest.APIAddress(id)
		if got := e.Nodes.Replicas(addr); !slices.Equal(got, []string{v.ID}) {
			t.Errorf("node %s replicas %v, want [%s]", id, got, v.ID)
		}
		if l, ok := e.Nodes.Layout(addr, v.ID); !ok || !layoutsEqual(l, want) {
			t.Errorf("node %s layout %+v, want %+v", id, l, want)
		}
	}
	if v.MinInSyncReplicas != 2 || v.Name != "pvc-1" {
		t.Errorf("record %+v", v)
	}
}

func layoutsEqual(a, b replication.Layout) bool {
	return a.VolumeID == b.VolumeID && a.Size == b.Size && a.Epoch == b.Epoch &&
		a.Primary == b.Primary && slices.Equal(a.Replicas, b.Replicas)
}

func TestCreateVolumeSpreadsByFreeSpace(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	first := mustCreate(t, e, "pvc-1")
	second := mustCreate(t, e, "pvc-2")
	if got, want := replicaNodes(first.Layout), []string{"a1", "b1", "c1"}; !slices.Equal(got, want) {
		t.Errorf("first volume on %v, want %v", got, want)
	}
	// The first volume's reservations leave a2, b2 and c2 with the most room.
	if got, want := replicaNodes(second.Layout), []string{"a2", "b2", "c2"}; !slices.Equal(got, want) {
		t.Errorf("second volume on %v, want %v", got, want)
	}
}

func TestCreateVolumeIsIdempotentByName(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	again := mustCreate(t, e, "pvc-1")
	if again.ID != v.ID || again.Layout.Epoch != 1 {
		t.Errorf("repeat gave %s at epoch %d, want %s at 1", again.ID, again.Layout.Epoch, v.ID)
	}

	tests := []struct {
		name string
		edit func(*controller.VolumeRequest)
		want error
	}{
		{"same request", func(*controller.VolumeRequest) {}, nil},
		{"range still holds the size", func(r *controller.VolumeRequest) { r.RequiredBytes, r.LimitBytes = 1, 2*gib }, nil},
		{"larger size", func(r *controller.VolumeRequest) { r.Size, r.RequiredBytes = 2*gib, 2*gib }, controller.ErrAlreadyExistsDifferent},
		{"limit below size", func(r *controller.VolumeRequest) { r.RequiredBytes, r.LimitBytes = 4096, gib/2 }, controller.ErrAlreadyExistsDifferent},
		{"other capability", func(r *controller.VolumeRequest) { r.Capabilities = []string{"block/SINGLE_NODE_WRITER"} }, controller.ErrAlreadyExistsDifferent},
		{"other parameter", func(r *controller.VolumeRequest) { r.Parameters = map[string]string{"replicas": "2"} }, controller.ErrAlreadyExistsDifferent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := volumeRequest("pvc-1")
			tc.edit(&req)
			got, err := e.C.CreateVolume(ctx, req)
			if !errors.Is(err, tc.want) || (err != nil) != (tc.want != nil) {
				t.Fatalf("CreateVolume: %v, want %v", err, tc.want)
			}
			if err == nil && got.ID != v.ID {
				t.Errorf("CreateVolume gave %s, want %s", got.ID, v.ID)
			}
		})
	}
}

func TestCreateVolumeRollsBackWhenANodeFails(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	e.Nodes.SetDown(controllertest.APIAddress("c1"), true)
	_, err := e.C.CreateVolume(ctx, volumeRequest("pvc-1"))
	if !errors.Is(err, controller.ErrNodeUnavailable) {
		t.Fatalf("CreateVolume: %v, want ErrNodeUnavailable", err)
	}
	for _, id := range []string{"a1", "b1"} {
		if got := e.Nodes.Replicas(controllertest.APIAddress(id)); len(got) != 0 {
			t.Errorf("node %s keeps replicas %v", id, got)
		}
	}
	if _, err := e.C.GetVolume(ctx, "vol-0"); !errors.Is(err, controller.ErrVolumeNotFound) {
		t.Errorf("GetVolume: %v", err)
	}
	page, err := e.C.ListVolumes(ctx, store.ListOptions{})
	if err != nil || len(page.Volumes) != 0 {
		t.Errorf("ListVolumes = %d volumes, %v; want none", len(page.Volumes), err)
	}
}

func TestDeleteVolumeRemovesEveryReplica(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	for range 2 { // the second call finds nothing and succeeds
		if err := e.C.DeleteVolume(ctx, v.ID); err != nil {
			t.Fatalf("DeleteVolume: %v", err)
		}
	}
	for _, n := range controllertest.SixNodes {
		if got := e.Nodes.Replicas(controllertest.APIAddress(n.ID)); len(got) != 0 {
			t.Errorf("node %s keeps replicas %v", n.ID, got)
		}
	}
	if _, err := e.C.GetVolume(ctx, v.ID); !errors.Is(err, controller.ErrVolumeNotFound) {
		t.Errorf("GetVolume after delete: %v, want ErrVolumeNotFound", err)
	}
	if err := e.C.DeleteVolume(ctx, store.NewVolumeID()); err != nil {
		t.Errorf("DeleteVolume of an unknown id: %v", err)
	}
}

func TestDeleteVolumeRefusesAPublishedVolume(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	if _, err := e.C.Publish(ctx, v.ID, "a1"); err != nil {
		t.Fatal(err)
	}
	if err := e.C.DeleteVolume(ctx, v.ID); !errors.Is(err, controller.ErrVolumeInUse) {
		t.Fatalf("DeleteVolume of a published volume: %v, want ErrVolumeInUse", err)
	}
	if _, err := e.C.GetVolume(ctx, v.ID); err != nil {
		t.Fatalf("volume gone after a refused delete: %v", err)
	}
	if err := e.C.Unpublish(ctx, v.ID, "a1"); err != nil {
		t.Fatal(err)
	}
	if err := e.C.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatalf("DeleteVolume after unpublish: %v", err)
	}
}

func TestPublish(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1") // a1 primary, epoch 1
	steps := []struct {
		name    string
		op      func() (store.Volume, error)
		wantErr error
		want    store.Attachment
		// epoch is the record's; fenced is the attachment generation in
		// the layout the primary a1 holds.
		epoch, fenced uint64
	}{
		{"publish", func() (store.Volume, error) { return e.C.Publish(ctx, v.ID, "a2") }, nil, store.Attachment{NodeID: "a2", Generation: 1}, 2, 1},
		{"publish again", func() (store.Volume, error) { return e.C.Publish(ctx, v.ID, "a2") }, nil, store.Attachment{NodeID: "a2", Generation: 1}, 2, 1},
		{"publish elsewhere", func() (store.Volume, error) { return e.C.Publish(ctx, v.ID, "b2") }, controller.ErrPublishedElsewhere, store.Attachment{NodeID: "a2", Generation: 1}, 2, 1},
		{"unpublish from another node", func() (store.Volume, error) { return store.Volume{}, e.C.Unpublish(ctx, v.ID, "b2") }, nil, store.Attachment{NodeID: "a2", Generation: 1}, 2, 1},
		{"unpublish", func() (store.Volume, error) { return store.Volume{}, e.C.Unpublish(ctx, v.ID, "a2") }, nil, store.Attachment{Generation: 1}, 2, 1},
		{"unpublish again", func() (store.Volume, error) { return store.Volume{}, e.C.Unpublish(ctx, v.ID, "a2") }, nil, store.Attachment{Generation: 1}, 2, 1},
		{"publish to second node", func() (store.Volume, error) { return e.C.Publish(ctx, v.ID, "b2") }, nil, store.Attachment{NodeID: "b2", Generation: 2}, 3, 2},
		{"unknown node", func() (store.Volume, error) { return e.C.Publish(ctx, v.ID, "zz") }, controller.ErrNodeNotFound, store.Attachment{NodeID: "b2", Generation: 2}, 3, 2},
		{"unknown volume", func() (store.Volume, error) { return e.C.Publish(ctx, store.NewVolumeID(), "a1") }, controller.ErrVolumeNotFound, store.Attachment{NodeID: "b2", Generation: 2}, 3, 2},
		{"unpublish unknown volume", func() (store.Volume, error) { return store.Volume{}, e.C.Unpublish(ctx, store.NewVolumeID(), "a1") }, nil, store.Attachment{NodeID: "b2", Generation: 2}, 3, 2},
	}
	for _, st := range steps {
		_, err := st.op()
		if !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
			t.Fatalf("%s: error %v, want %v", st.name, err, st.wantErr)
		}
		got, err := e.C.GetVolume(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attachment != st.want || got.Layout.Epoch != st.epoch || got.Layout.AttachmentGeneration != st.fenced {
			t.Fatalf("%s: attachment %+v at epoch %d, layout generation %d; want %+v at %d, %d", st.name,
				got.Attachment, got.Layout.Epoch, got.Layout.AttachmentGeneration, st.want, st.epoch, st.fenced)
		}
		l, _ := e.Nodes.Layout(controllertest.APIAddress("a1"), v.ID)
		if l.Epoch != st.epoch || l.AttachmentGeneration != st.fenced {
			t.Fatalf("%s: primary holds epoch %d generation %d, want %d and %d", st.name, l.Epoch, l.AttachmentGeneration, st.epoch, st.fenced)
		}
	}
}

func TestPublishWaitsForThePrimaryToFence(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1") // a1 primary
	primary := controllertest.APIAddress("a1")
	e.Nodes.SetDown(primary, true)
	if _, err := e.C.Publish(ctx, v.ID, "b2"); !errors.Is(err, controller.ErrNodeUnavailable) {
		t.Fatalf("Publish with the primary down: %v, want ErrNodeUnavailable", err)
	}
	e.Nodes.SetDown(primary, false)
	got, err := e.C.Publish(ctx, v.ID, "b2")
	if err != nil {
		t.Fatalf("Publish retried: %v", err)
	}
	want := store.Attachment{NodeID: "b2", Generation: 1}
	if got.Attachment != want || got.Layout.Epoch != 2 {
		t.Errorf("retried Publish: %+v at epoch %d, want %+v at 2", got.Attachment, got.Layout.Epoch, want)
	}
	if l, _ := e.Nodes.Layout(primary, v.ID); l.Epoch != 2 || l.AttachmentGeneration != 1 {
		t.Errorf("primary holds epoch %d generation %d, want 2 and 1", l.Epoch, l.AttachmentGeneration)
	}
}

func TestReplicaReports(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1") // a1 primary, b1 and c1 replicas
	steps := []struct {
		name      string
		op        func() (replication.Layout, error)
		wantErr   error
		wantEpoch uint64
		wantB1    replication.ReplicaState
	}{
		{"fault b1", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, v.ID, 1, "b1", "timeout") }, nil, 2, replication.Faulted},
		{"stale fault report", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, v.ID, 1, "c1", "timeout") }, nil, 2, replication.Faulted},
		{"fault again", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, v.ID, 2, "b1", "timeout") }, nil, 2, replication.Faulted},
		{"synced while faulted", func() (replication.Layout, error) { return e.C.ReplicaSynced(ctx, v.ID, 2, "b1") }, nil, 2, replication.Faulted},
		{"epoch ahead", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, v.ID, 9, "c1", "") }, controller.ErrEpochAhead, 0, ""},
		{"primary reported", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, v.ID, 2, "a1", "") }, controller.ErrInvalidReport, 0, ""},
		{"not a replica", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, v.ID, 2, "a2", "") }, controller.ErrInvalidReport, 0, ""},
		{"unknown volume", func() (replication.Layout, error) { return e.C.ReplicaFaulted(ctx, store.NewVolumeID(), 1, "b1", "") }, controller.ErrVolumeNotFound, 0, ""},
	}
	for _, st := range steps {
		l, err := st.op()
		if !errors.Is(err, st.wantErr) || (err != nil) != (st.wantErr != nil) {
			t.Fatalf("%s: error %v, want %v", st.name, err, st.wantErr)
		}
		if err != nil {
			continue
		}
		if l.Epoch != st.wantEpoch || l.Replicas[1].State != st.wantB1 {
			t.Fatalf("%s: epoch %d, b1 %s; want %d, %s", st.name, l.Epoch, l.Replicas[1].State, st.wantEpoch, st.wantB1)
		}
		stored, _ := e.C.GetVolume(ctx, v.ID)
		if !layoutsEqual(stored.Layout, l) {
			t.Fatalf("%s: answered %+v, stored %+v", st.name, l, stored.Layout)
		}
	}
	if l, _ := e.Nodes.Layout(controllertest.APIAddress("c1"), v.ID); l.Epoch != 2 {
		t.Errorf("c1 got epoch %d pushed, want 2", l.Epoch)
	}
}

func TestReplicaSyncedMarksSyncingInSync(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	// Stand in for a replacement: c1 copies again.
	_, err := store.BumpEpoch(ctx, e.Store, v.ID, func(v *store.Volume) error {
		v.Layout.Replicas[2].State = replication.Syncing
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := e.C.ReplicaSynced(ctx, v.ID, 2, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if l.Epoch != 3 || l.Replicas[2].State != replication.InSync {
		t.Errorf("layout epoch %d, c1 %s; want 3, InSync", l.Epoch, l.Replicas[2].State)
	}
}

func TestHeartbeatAndLiveness(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes[:3])
	if err := e.C.Heartbeat("zz", 1); !errors.Is(err, controller.ErrNodeNotFound) {
		t.Errorf("Heartbeat of an unknown node: %v, want ErrNodeNotFound", err)
	}
	e.Clock.Advance(controller.DefaultHeartbeatTimeout - time.Second)
	for _, id := range []string{"a1", "b1"} {
		if err := e.C.Heartbeat(id, 3*gib); err != nil {
			t.Fatal(err)
		}
	}
	e.Clock.Advance(2 * time.Second) // a2's registration is now too old
	var live []string
	for _, n := range e.C.Nodes() {
		if n.Live {
			live = append(live, n.NodeID)
		}
	}
	if want := []string{"a1", "b1"}; !slices.Equal(live, want) {
		t.Errorf("live nodes %v, want %v", live, want)
	}
	if got := e.C.Capacity(nil); got != 6*gib {
		t.Errorf("Capacity = %d, want %d", got, 6*gib)
	}
	if got := e.C.Capacity(map[string]string{"topology.kubernetes.io/zone": "zone-b"}); got != 3*gib {
		t.Errorf("Capacity(zone-b) = %d, want %d", got, 3*gib)
	}
	if _, err := e.C.CreateVolume(ctx, volumeRequest("pvc-1")); !errors.Is(err, controller.ErrNoPlacement) {
		t.Errorf("CreateVolume with two live nodes: %v, want ErrNoPlacement", err)
	}
}

func TestDeleteVolumeGivesSpaceBack(t *testing.T) {
	e := controllertest.NewSized(t, controllertest.SixNodes[:3], 3*gib)
	req := volumeRequest("pvc-1")
	req.Replicas, req.Size, req.RequiredBytes = 3, 2*gib, 2*gib
	for i := range 3 {
		req.Name = fmt.Sprintf("pvc-%d", i)
		v, err := e.C.CreateVolume(ctx, req)
		if err != nil {
			t.Fatalf("CreateVolume %d: %v", i, err)
		}
		if got := e.C.Capacity(nil); got != 3*gib {
			t.Errorf("Capacity with one volume = %d, want %d", got, 3*gib)
		}
		if err := e.C.DeleteVolume(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
		if got := e.C.Capacity(nil); got != 9*gib {
			t.Errorf("Capacity after delete = %d, want %d", got, 9*gib)
		}
	}
}

func TestRegisterNodePersistsOnlyChanges(t *testing.T) {
	e := controllertest.New(t, nil)
	reg := controllertest.Registration("n1", "zone-a", gib)
	steps := []struct {
		name         string
		edit         func(*controller.Registration)
		wantRevision uint64
	}{
		{"first registration", func(*controller.Registration) {}, 1},
		{"same again", func(*controller.Registration) {}, 1},
		{"free space is not persisted", func(r *controller.Registration) { r.FreeBytes = 1 }, 1},
		{"new data address", func(r *controller.Registration) { r.DataAddress = "n1.data:7700" }, 2},
		{"new zone", func(r *controller.Registration) {
			r.Zone, r.Topology = "zone-b", map[string]string{"topology.kubernetes.io/zone": "zone-b"}
		}, 3},
	}
	for _, st := range steps {
		st.edit(&reg)
		if err := e.C.RegisterNode(ctx, reg); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		n, err := e.Store.GetNode(ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		if n.Revision != st.wantRevision || n.DataAddress != reg.DataAddress || n.Zone != reg.Zone {
			t.Errorf("%s: stored %+v, want revision %d", st.name, n, st.wantRevision)
		}
	}
}

// A restarted agent keeps no layouts; registering again must give it the
// layout of every volume it holds, or a restarted primary serves nothing.
func TestRegistrationResendsLayouts(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	primary := v.Layout.Primary
	addr := controllertest.APIAddress(primary)
	e.Nodes.Restart(addr)
	if _, ok := e.Nodes.Layout(addr, v.ID); ok {
		t.Fatal("fake node kept its layout across a restart")
	}
	zone := v.Layout.Replicas[0].Zone
	if err := e.C.RegisterNode(ctx, controllertest.Registration(primary, zone, 10<<30)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, ok := e.Nodes.Layout(addr, v.ID)
		if ok {
			if l.Epoch != v.Layout.Epoch || l.Primary != primary {
				t.Fatalf("resent layout epoch %d primary %s, want %d %s", l.Epoch, l.Primary, v.Layout.Epoch, primary)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the registered node never got its volume's layout again")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRecordsOutliveTheController(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1")
	restarted := controller.New(controller.Options{Store: e.Store, DialNode: e.Nodes.Dial, Now: e.Clock.Now})
	defer restarted.Close()

	if err := restarted.Heartbeat("a1", gib); !errors.Is(err, controller.ErrNodeNotFound) {
		t.Errorf("Heartbeat before registering again: %v, want ErrNodeNotFound", err)
	}
	got, err := restarted.CreateVolume(ctx, volumeRequest("pvc-1"))
	if err != nil || got.ID != v.ID {
		t.Errorf("repeated CreateVolume after restart = %s, %v; want %s", got.ID, err, v.ID)
	}
	if err := restarted.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.Nodes.Replicas(controllertest.APIAddress("a1")); len(got) != 0 {
		t.Errorf("a1 keeps %v", got)
	}
}

func TestDeleteVolumeSkipsDeadNodes(t *testing.T) {
	e := controllertest.New(t, controllertest.SixNodes)
	v := mustCreate(t, e, "pvc-1") // a1, b1, c1
	e.Nodes.SetDown(controllertest.APIAddress("c1"), true)
	if err := e.C.DeleteVolume(ctx, v.ID); !errors.Is(err, controller.ErrNodeUnavailable) {
		t.Fatalf("DeleteVolume with c1 silent but live: %v, want ErrNodeUnavailable", err)
	}
	e.Clock.Advance(controller.DefaultHeartbeatTimeout + time.Second)
	for _, id := range []string{"a1", "b1"} {
		if err := e.C.Heartbeat(id, 10*gib); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.C.DeleteVolume(ctx, v.ID); err != nil {
		t.Fatalf("DeleteVolume with c1 dead: %v", err)
	}
	if _, err := e.C.GetVolume(ctx, v.ID); !errors.Is(err, controller.ErrVolumeNotFound) {
		t.Errorf("GetVolume: %v, want ErrVolumeNotFound", err)
	}
}
