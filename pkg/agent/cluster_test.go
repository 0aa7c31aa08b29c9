package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// startCluster runs three agents on 127.0.0.1, .2 and .3, reporting to
// controller when it is not empty.
func startCluster(t *testing.T, controller string) []*testAgent {
	t.Helper()
	var agents []*testAgent
	for i, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		id := "node-" + string(rune('1'+i))
		agents = append(agents, startAgent(t, id, ip, t.TempDir(), controller))
	}
	return agents
}

// createVolume creates the volume on every agent and hands every agent a
// layout at epoch 1 with the first agent as primary.
func createVolume(t *testing.T, agents []*testAgent, id string) *apiv1.Layout {
	t.Helper()
	for _, a := range agents {
		createReplica(t, a, id, testSize)
	}
	l := layoutOf(id, 1, agents[0], agents...)
	for _, a := range agents {
		setLayout(t, a, l)
	}
	return l
}

func TestReplicatedWriteThroughNBD(t *testing.T) {
	requireQemuIO(t)
	agents := startCluster(t, "")
	createVolume(t, agents, "vol-a")
	primary := agents[0]

	out, err := qemuIO(callCtx(t), primary.agent.Endpoints().NBD, "vol-a", "write -P 0xab 0 1M")
	if err != nil || !strings.Contains(out, "wrote 1048576/1048576 bytes at offset 0") {
		t.Fatalf("qemu-io write: %v\n%s", err, out)
	}

	want := image(testSize, fill{0xab, 0, mib})
	for _, a := range agents {
		if got := checksum(t, a, "vol-a"); got != want {
			t.Errorf("checksum on %s = %s, want %s", a.id, got, want)
		}
	}
}

func TestPrimaryReportsReplicaStatus(t *testing.T) {
	agents := startCluster(t, "")
	l := createVolume(t, agents, "vol-s")

	var v *apiv1.Volume
	err := eventually(5*time.Second, func() bool {
		resp, err := agents[0].client.GetVolume(callCtx(t), &apiv1.GetVolumeRequest{VolumeId: "vol-s"})
		v = resp.GetVolume()
		return err == nil && len(v.GetReplicas()) == 3 && v.GetReplicas()[1].GetConnected() && v.GetReplicas()[2].GetConnected()
	})
	if err != nil {
		t.Fatalf("replicas never all connected: %v", v)
	}
	want := &apiv1.Volume{
		VolumeId: "vol-s", SizeBytes: testSize, Epoch: 1, Role: apiv1.Role_ROLE_PRIMARY, Layout: l,
		Replicas: []*apiv1.ReplicaStatus{
			inSyncStatus("node-1"), inSyncStatus("node-2"), inSyncStatus("node-3"),
		},
	}
	if !proto.Equal(v, want) {
		t.Errorf("GetVolume on primary =\n%v\nwant\n%v", v, want)
	}
}

func inSyncStatus(node string) *apiv1.ReplicaStatus {
	return &apiv1.ReplicaStatus{NodeId: node, State: apiv1.ReplicaState_REPLICA_STATE_IN_SYNC,
		Connected: true, SyncedBytes: testSize, TotalBytes: testSize}
}

func TestFaultedReplicaBlocksWritesUntilReportAnswered(t *testing.T) {
	requireQemuIO(t)
	ctrl := startController(t)
	agents := startCluster(t, ctrl.addr())
	ctrl.put(createVolume(t, agents, "vol-f"))
	primary, nbdAddr := agents[0], agents[0].agent.Endpoints().NBD

	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-f", "write -P 0xab 0 1M"); err != nil {
		t.Fatalf("first write: %v\n%s", err, out)
	}
	agents[2].stop(t)
	report := waitReport(t, ctrl)
	wantReport := &apiv1.ReportReplicaFaultedRequest{VolumeId: "vol-f", Epoch: 1, NodeId: "node-3", Cause: report.GetCause()}
	if !proto.Equal(report, wantReport) || report.GetCause() == "" {
		t.Fatalf("report = %v, want %v with a cause", report, wantReport)
	}

	written := make(chan error, 1)
	go func() {
		out, err := qemuIO(context.Background(), nbdAddr, "vol-f", "write -P 0xcd 1M 1M")
		if err == nil && !strings.Contains(out, "wrote 1048576/1048576 bytes at offset 1048576") {
			err = fmt.Errorf("unexpected qemu-io output: %s", out)
		}
		written <- err
	}()
	select {
	case err := <-written:
		t.Fatalf("write finished (err %v) while the report of node-3 was unanswered", err)
	case <-time.After(time.Second):
	}

	ctrl.open()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("second write: %v", err)
		}
	case <-time.After(callTimeout):
		t.Fatal("write still blocked after the controller answered")
	}

	want := image(testSize, fill{0xab, 0, mib}, fill{0xcd, mib, mib})
	for _, a := range agents[:2] {
		if got := checksum(t, a, "vol-f"); got != want {
			t.Errorf("checksum on %s = %s, want %s", a.id, got, want)
		}
	}
	resp, err := primary.client.GetVolume(callCtx(t), &apiv1.GetVolumeRequest{VolumeId: "vol-f"})
	if err != nil {
		t.Fatal(err)
	}
	wantLayout := layoutOf("vol-f", 2, agents[0], agents...)
	wantLayout.Replicas[2].State = apiv1.ReplicaState_REPLICA_STATE_FAULTED
	got := resp.GetVolume()
	if got.GetEpoch() != 2 || !proto.Equal(got.GetLayout(), wantLayout) || len(got.GetReplicas()) != 3 {
		t.Fatalf("primary after report: epoch %d, layout %v, %d replicas listed; want epoch 2, %v, 3",
			got.GetEpoch(), got.GetLayout(), len(got.GetReplicas()), wantLayout)
	}
	if r := got.GetReplicas()[2]; r.GetNodeId() != "node-3" || r.GetState() != apiv1.ReplicaState_REPLICA_STATE_FAULTED ||
		r.GetConnected() || r.GetSyncedBytes() != 0 {
		t.Errorf("faulted replica shown as %v; want node-3 FAULTED, not connected, 0 bytes synced", r)
	}
}

func waitReport(t *testing.T, ctrl *testController) *apiv1.ReportReplicaFaultedRequest {
	t.Helper()
	select {
	case r := <-ctrl.reports:
		return r
	case <-time.After(callTimeout):
		t.Fatal("no fault report reached the controller")
		return nil
	}
}

func TestDeleteReplicaStopsExportAndRemovesDirectory(t *testing.T) {
	agents := startCluster(t, "")
	createVolume(t, agents, "vol-d")
	primary := agents[0]
	dir := filepath.Join(primary.agent.cfg.DataDir, "volumes", "vol-d")
	if got := (primaryExports{primary.agent}).List(); !slices.Equal(got, []string{"vol-d"}) {
		t.Fatalf("exports before delete = %q, want [vol-d]", got)
	}

	for range 2 { // the second call shows DeleteReplica is idempotent
		if _, err := primary.client.DeleteReplica(callCtx(t), &apiv1.DeleteReplicaRequest{VolumeId: "vol-d"}); err != nil {
			t.Fatalf("DeleteReplica: %v", err)
		}
	}

	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("stat %s after delete: %v, want not exist", dir, err)
	}
	if got := (primaryExports{primary.agent}).List(); len(got) != 0 {
		t.Errorf("exports after delete = %q, want none", got)
	}
	_, err := primary.client.GetVolume(callCtx(t), &apiv1.GetVolumeRequest{VolumeId: "vol-d"})
	wantCode(t, err, codes.NotFound)
}

// A replica node raises its epoch from a layout only when the layout
// moves the primary: that fences the old primary at once. Under the same
// primary, the primary's own frames raise it.
func TestReplicaNodeRaisesEpochOnlyWhenThePrimaryMoves(t *testing.T) {
	agents := startCluster(t, "")
	createReplica(t, agents[1], "vol-e", testSize)
	for _, tc := range []struct {
		name      string
		epoch     uint64
		primary   *testAgent
		wantEpoch uint64
	}{
		{"first layout names a primary", 7, agents[0], 7},
		{"same primary, newer epoch", 8, agents[0], 7},
		{"primary moves", 9, agents[2], 9},
	} {
		l := layoutOf("vol-e", tc.epoch, tc.primary, agents...)
		v := setLayout(t, agents[1], l)
		if v.GetEpoch() != tc.wantEpoch || v.GetRole() != apiv1.Role_ROLE_REPLICA || !proto.Equal(v.GetLayout(), l) {
			t.Errorf("%s: epoch %d, role %v, layout %v; want epoch %d, ROLE_REPLICA, %v",
				tc.name, v.GetEpoch(), v.GetRole(), v.GetLayout(), tc.wantEpoch, l)
		}
	}
}

func TestPrimaryMovesAway(t *testing.T) {
	agents := startCluster(t, "")
	createVolume(t, agents, "vol-m")
	l := layoutOf("vol-m", 2, agents[1], agents...)

	old := setLayout(t, agents[0], l)
	next := setLayout(t, agents[1], l)

	if old.GetRole() != apiv1.Role_ROLE_REPLICA || len(old.GetReplicas()) != 0 {
		t.Errorf("old primary: role %v, %d replica statuses; want ROLE_REPLICA, 0", old.GetRole(), len(old.GetReplicas()))
	}
	if next.GetRole() != apiv1.Role_ROLE_PRIMARY || next.GetEpoch() != 2 {
		t.Errorf("new primary: role %v, epoch %d; want ROLE_PRIMARY, 2", next.GetRole(), next.GetEpoch())
	}
	if got := (primaryExports{agents[0].agent}).List(); len(got) != 0 {
		t.Errorf("old primary still exports %q", got)
	}
}

func TestFaultedReplicaRejoinsBySyncing(t *testing.T) {
	requireQemuIO(t)
	ctrl := startController(t)
	ctrl.open()
	agents := startCluster(t, ctrl.addr())
	ctrl.put(createVolume(t, agents, "vol-r"))
	primary, nbdAddr := agents[0], agents[0].agent.Endpoints().NBD
	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-r", "write -P 0xab 0 1M"); err != nil {
		t.Fatalf("first write: %v\n%s", err, out)
	}
	agents[2].stop(t)
	waitReport(t, ctrl)
	waitPrimaryEpoch(t, primary, "vol-r", 2)
	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-r", "write -P 0xcd 1M 1M"); err != nil {
		t.Fatalf("write while node-3 is away: %v\n%s", err, out)
	}

	back := startAgent(t, "node-3", "127.0.0.3", agents[2].agent.cfg.DataDir, ctrl.addr())
	createReplica(t, back, "vol-r", testSize) // already there: a no-op
	agents[2] = back
	rejoin := layoutOf("vol-r", 3, primary, agents...)
	rejoin.Replicas[2].State = apiv1.ReplicaState_REPLICA_STATE_SYNCING
	ctrl.put(rejoin)
	for _, a := range agents {
		setLayout(t, a, rejoin)
	}
	waitPrimaryEpoch(t, primary, "vol-r", 4)
	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-r", "write -P 0xef 2M 1M"); err != nil {
		t.Fatalf("write after node-3 rejoined: %v\n%s", err, out)
	}

	want := image(testSize, fill{0xab, 0, mib}, fill{0xcd, mib, mib}, fill{0xef, 2 * mib, mib})
	for _, a := range agents {
		if got := checksum(t, a, "vol-r"); got != want {
			t.Errorf("checksum on %s = %s, want %s", a.id, got, want)
		}
	}
	resp, err := back.client.GetVolume(callCtx(t), &apiv1.GetVolumeRequest{VolumeId: "vol-r"})
	if err != nil || resp.GetVolume().GetRebuilding() || resp.GetVolume().GetEpoch() != 4 {
		t.Errorf("rejoined replica: %v, %v; want epoch 4, not rebuilding", resp.GetVolume(), err)
	}
}

// waitPrimaryEpoch waits until the primary acts on a layout of epoch.
func waitPrimaryEpoch(t *testing.T, primary *testAgent, id string, epoch uint64) {
	t.Helper()
	var got *apiv1.Volume
	err := eventually(callTimeout, func() bool {
		resp, err := primary.client.GetVolume(callCtx(t), &apiv1.GetVolumeRequest{VolumeId: id})
		got = resp.GetVolume()
		return err == nil && got.GetLayout().GetEpoch() == epoch
	})
	if err != nil {
		t.Fatalf("primary never reached epoch %d: %v", epoch, got)
	}
}

// TestExpandThroughNBD: replicas grown with ExpandReplica, then a layout
// with the larger size, open the new range to NBD clients on every
// replica; before that layout the primary serves the old size.
func TestExpandThroughNBD(t *testing.T) {
	requireQemuIO(t)
	agents := startCluster(t, "")
	l := createVolume(t, agents, "vol-x")
	primary := agents[0]
	nbdAddr := primary.agent.Endpoints().NBD
	const grown = 2 * testSize

	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-x", "write -P 0xab 0 1M"); err != nil {
		t.Fatalf("qemu-io write: %v\n%s", err, out)
	}
	for _, a := range agents {
		resp, err := a.client.ExpandReplica(callCtx(t), &apiv1.ExpandReplicaRequest{VolumeId: "vol-x", SizeBytes: grown})
		if err != nil || resp.GetVolume().GetSizeBytes() != grown {
			t.Fatalf("ExpandReplica on %s = %v, %v; want %d bytes", a.id, resp.GetVolume(), err, grown)
		}
	}
	if _, err := primary.client.ExpandReplica(callCtx(t), &apiv1.ExpandReplicaRequest{VolumeId: "vol-x", SizeBytes: testSize}); status.Code(err) != codes.OutOfRange {
		t.Errorf("ExpandReplica to a smaller size: %v, want OutOfRange", err)
	}
	if _, err := primary.client.ExpandReplica(callCtx(t), &apiv1.ExpandReplicaRequest{VolumeId: "vol-none", SizeBytes: grown}); status.Code(err) != codes.NotFound {
		t.Errorf("ExpandReplica of a missing replica: %v, want NotFound", err)
	}
	// Not committed yet: the new range is not the volume's.
	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-x", fmt.Sprintf("write -P 0xcd %d 1M", testSize)); err == nil && !strings.Contains(out, "error") {
		t.Fatalf("write past the layout's size succeeded before the layout grew:\n%s", out)
	}
	if got, want := checksum(t, agents[1], "vol-x"), image(testSize, fill{0xab, 0, mib}); got != want {
		t.Errorf("checksum of a replica grown ahead of its layout = %s, want the layout's size %s", got, want)
	}

	l.Epoch, l.SizeBytes = 2, grown
	for _, a := range agents {
		setLayout(t, a, l)
	}
	if out, err := qemuIO(callCtx(t), nbdAddr, "vol-x", fmt.Sprintf("write -P 0xcd %d 1M", grown-mib)); err != nil || !strings.Contains(out, "wrote 1048576/1048576") {
		t.Fatalf("qemu-io write at the new end: %v\n%s", err, out)
	}
	want := image(grown, fill{0xab, 0, mib}, fill{0xcd, grown - mib, mib})
	for _, a := range agents {
		if got := checksum(t, a, "vol-x"); got != want {
			t.Errorf("checksum on %s = %s, want %s", a.id, got, want)
		}
	}
}

// TestLayoutGrowsAReplicaLeftBehind: a replica that missed the expansion
// (it was out of the write path) grows when it gets the larger layout.
func TestLayoutGrowsAReplicaLeftBehind(t *testing.T) {
	agents := startCluster(t, "")
	self, other := agents[0], agents[1]
	createReplica(t, self, "vol-g", testSize)
	l := layoutOf("vol-g", 3, other, self, other)
	l.SizeBytes = 2 * testSize
	if got := setLayout(t, self, l); got.GetSizeBytes() != 2*testSize {
		t.Errorf("replica holds %d bytes after a layout of %d", got.GetSizeBytes(), 2*testSize)
	}
}
