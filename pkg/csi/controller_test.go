package csi

import (
	"context"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
	"github.com/trireme-csi/trireme/pkg/store"
)

var ctrlCtx = context.Background()

const ctrlSNW = csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

func newCtrlServer(t *testing.T, nodes []controllertest.Node) (*ControllerServer, *controllertest.Env) {
	t.Helper()
	e := controllertest.New(t, nodes)
	return NewControllerServer(e.C), e
}

func ctrlCreateRequest(name string) *csipb.CreateVolumeRequest {
	return &csipb.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csipb.CapacityRange{RequiredBytes: 1 << 30},
		VolumeCapabilities: []*csipb.VolumeCapability{ctrlMountCap("ext4", ctrlSNW)},
	}
}

func ctrlMustCreate(t *testing.T, s *ControllerServer, name string) *csipb.Volume {
	t.Helper()
	resp, err := s.CreateVolume(ctrlCtx, ctrlCreateRequest(name))
	if err != nil {
		t.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return resp.GetVolume()
}

func TestCreateVolumeCodes(t *testing.T) {
	s, _ := newCtrlServer(t, controllertest.SixNodes)
	ctrlMustCreate(t, s, "existing")
	tests := []struct {
		name string
		edit func(*csipb.CreateVolumeRequest)
		want codes.Code
	}{
		{"valid", func(*csipb.CreateVolumeRequest) {}, codes.OK},
		{"repeat of existing", func(r *csipb.CreateVolumeRequest) { r.Name = "existing" }, codes.OK},
		{"128-byte name of any characters", func(r *csipb.CreateVolumeRequest) { r.Name = strings.Repeat("é/", 32) + strings.Repeat(" ", 32) }, codes.OK},
		{"no capacity: default size", func(r *csipb.CreateVolumeRequest) { r.CapacityRange = nil }, codes.OK},
		{"preferred zone", func(r *csipb.CreateVolumeRequest) {
			r.AccessibilityRequirements = &csipb.TopologyRequirement{Preferred: []*csipb.Topology{{Segments: map[string]string{"topology.kubernetes.io/zone": "zone-c"}}}}
		}, codes.OK},
		{"missing name", func(r *csipb.CreateVolumeRequest) { r.Name = "" }, codes.InvalidArgument},
		{"129-byte name", func(r *csipb.CreateVolumeRequest) { r.Name = strings.Repeat("n", 129) }, codes.InvalidArgument},
		{"missing capabilities", func(r *csipb.CreateVolumeRequest) { r.VolumeCapabilities = nil }, codes.InvalidArgument},
		{"multi-node mount", func(r *csipb.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csipb.VolumeCapability{ctrlMountCap("ext4", csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}
		}, codes.InvalidArgument},
		{"unsupported fs_type", func(r *csipb.CreateVolumeRequest) {
			r.VolumeCapabilities = []*csipb.VolumeCapability{ctrlMountCap("ntfs", ctrlSNW)}
		}, codes.InvalidArgument},
		{"bad parameter", func(r *csipb.CreateVolumeRequest) { r.Parameters = map[string]string{"replicas": "9"} }, codes.InvalidArgument},
		{"required above limit", func(r *csipb.CreateVolumeRequest) { r.CapacityRange.LimitBytes = 1 << 20 }, codes.InvalidArgument},
		{"content source", func(r *csipb.CreateVolumeRequest) { r.VolumeContentSource = &csipb.VolumeContentSource{} }, codes.InvalidArgument},
		{"below minimum", func(r *csipb.CreateVolumeRequest) { r.CapacityRange = &csipb.CapacityRange{LimitBytes: 100} }, codes.OutOfRange},
		{"beyond any node", func(r *csipb.CreateVolumeRequest) { r.CapacityRange.RequiredBytes = 11 << 30 }, codes.OutOfRange},
		{"fits a node, but no three have room", func(r *csipb.CreateVolumeRequest) { r.CapacityRange.RequiredBytes = 9<<30 + 4096 }, codes.ResourceExhausted},
		{"requisite zone without nodes", func(r *csipb.CreateVolumeRequest) {
			r.AccessibilityRequirements = &csipb.TopologyRequirement{Requisite: []*csipb.Topology{{Segments: map[string]string{"topology.kubernetes.io/zone": "zone-x"}}}}
		}, codes.ResourceExhausted},
		{"existing name, other size", func(r *csipb.CreateVolumeRequest) { r.Name, r.CapacityRange.RequiredBytes = "existing", 2<<30 }, codes.AlreadyExists},
		{"existing name, other capability", func(r *csipb.CreateVolumeRequest) {
			r.Name, r.VolumeCapabilities = "existing", []*csipb.VolumeCapability{ctrlBlockCap(ctrlSNW)}
		}, codes.AlreadyExists},
		{"existing name, other parameter", func(r *csipb.CreateVolumeRequest) {
			r.Name, r.Parameters = "existing", map[string]string{"replicas": "2"}
		}, codes.AlreadyExists},
		{"fsType parameter conflicts with the capability", func(r *csipb.CreateVolumeRequest) {
			r.Parameters = map[string]string{"fsType": "xfs"}
		}, codes.InvalidArgument},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := ctrlCreateRequest("vol-" + string(rune('a'+i)))
			tc.edit(req)
			_, err := s.CreateVolume(ctrlCtx, req)
			if status.Code(err) != tc.want {
				t.Errorf("CreateVolume: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCreateVolumeResponse(t *testing.T) {
	s, _ := newCtrlServer(t, controllertest.SixNodes)
	v := ctrlMustCreate(t, s, "pvc-1")
	if !wellFormedID(v.GetVolumeId()) || v.GetCapacityBytes() != 1<<30 || len(v.GetAccessibleTopology()) != 0 ||
		v.GetVolumeContext()[ContextFSType] != "ext4" {
		t.Errorf("volume %v", v)
	}
}

func TestVolumeCallCodes(t *testing.T) {
	s, _ := newCtrlServer(t, controllertest.SixNodes)
	id := ctrlMustCreate(t, s, "pvc-1").GetVolumeId()
	unknown := store.NewVolumeID()
	caps := []*csipb.VolumeCapability{ctrlMountCap("ext4", ctrlSNW)}
	publish := func(vol, node string, c *csipb.VolumeCapability) error {
		_, err := s.ControllerPublishVolume(ctrlCtx, &csipb.ControllerPublishVolumeRequest{VolumeId: vol, NodeId: node, VolumeCapability: c})
		return err
	}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"publish", func() error { return publish(id, "a2", caps[0]) }, codes.OK},
		{"publish again", func() error { return publish(id, "a2", caps[0]) }, codes.OK},
		{"publish to a second node", func() error { return publish(id, "b2", caps[0]) }, codes.FailedPrecondition},
		{"publish without volume id", func() error { return publish("", "a2", caps[0]) }, codes.InvalidArgument},
		{"publish without node id", func() error { return publish(id, "", caps[0]) }, codes.InvalidArgument},
		{"publish without capability", func() error { return publish(id, "a2", nil) }, codes.InvalidArgument},
		{"publish multi-node", func() error {
			return publish(id, "a2", ctrlBlockCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY))
		}, codes.InvalidArgument},
		{"publish unknown volume", func() error { return publish(unknown, "a2", caps[0]) }, codes.NotFound},
		{"publish malformed volume id", func() error { return publish("no such volume", "a2", caps[0]) }, codes.NotFound},
		{"publish unknown node", func() error { return publish(id, "zz", caps[0]) }, codes.NotFound},
		{"unpublish", func() error {
			_, err := s.ControllerUnpublishVolume(ctrlCtx, &csipb.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: "a2"})
			return err
		}, codes.OK},
		{"unpublish unknown volume", func() error {
			_, err := s.ControllerUnpublishVolume(ctrlCtx, &csipb.ControllerUnpublishVolumeRequest{VolumeId: unknown, NodeId: "a2"})
			return err
		}, codes.OK},
		{"unpublish without volume id", func() error {
			_, err := s.ControllerUnpublishVolume(ctrlCtx, &csipb.ControllerUnpublishVolumeRequest{NodeId: "a2"})
			return err
		}, codes.InvalidArgument},
		{"validate capabilities", func() error {
			resp, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: id, VolumeCapabilities: caps})
			if err == nil && resp.GetConfirmed() == nil {
				return status.Error(codes.Unknown, "not confirmed")
			}
			return err
		}, codes.OK},
		{"validate unsupported capabilities", func() error {
			resp, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: id,
				VolumeCapabilities: []*csipb.VolumeCapability{ctrlMountCap("ext4", csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}})
			if err == nil && (resp.GetConfirmed() != nil || resp.GetMessage() == "") {
				return status.Error(codes.Unknown, "confirmed")
			}
			return err
		}, codes.OK},
		{"validate another filesystem", func() error {
			resp, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: id,
				VolumeCapabilities: []*csipb.VolumeCapability{ctrlMountCap("xfs", ctrlSNW)}})
			if err == nil && (resp.GetConfirmed() != nil || resp.GetMessage() != "volume is formatted ext4, not xfs") {
				return status.Errorf(codes.Unknown, "answer %v", resp)
			}
			return err
		}, codes.OK},
		{"validate other parameters", func() error {
			resp, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: id,
				VolumeCapabilities: caps, Parameters: map[string]string{"replicas": "1"}})
			if err == nil && (resp.GetConfirmed() != nil || !strings.HasPrefix(resp.GetMessage(), "volume has replicas=3")) {
				return status.Errorf(codes.Unknown, "answer %v", resp)
			}
			return err
		}, codes.OK},
		{"validate without capabilities", func() error {
			_, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: id})
			return err
		}, codes.InvalidArgument},
		{"validate without volume id", func() error {
			_, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: caps})
			return err
		}, codes.InvalidArgument},
		{"validate unknown volume", func() error {
			_, err := s.ValidateVolumeCapabilities(ctrlCtx, &csipb.ValidateVolumeCapabilitiesRequest{VolumeId: unknown, VolumeCapabilities: caps})
			return err
		}, codes.NotFound},
		{"get volume", func() error {
			_, err := s.ControllerGetVolume(ctrlCtx, &csipb.ControllerGetVolumeRequest{VolumeId: id})
			return err
		}, codes.OK},
		{"get unknown volume", func() error {
			_, err := s.ControllerGetVolume(ctrlCtx, &csipb.ControllerGetVolumeRequest{VolumeId: unknown})
			return err
		}, codes.NotFound},
		{"get without volume id", func() error {
			_, err := s.ControllerGetVolume(ctrlCtx, &csipb.ControllerGetVolumeRequest{})
			return err
		}, codes.InvalidArgument},
		{"list with bad token", func() error {
			_, err := s.ListVolumes(ctrlCtx, &csipb.ListVolumesRequest{StartingToken: "invalid-token"})
			return err
		}, codes.Aborted},
		{"list with negative max", func() error {
			_, err := s.ListVolumes(ctrlCtx, &csipb.ListVolumesRequest{MaxEntries: -1})
			return err
		}, codes.InvalidArgument},
		{"capacity with bad parameter", func() error {
			_, err := s.GetCapacity(ctrlCtx, &csipb.GetCapacityRequest{Parameters: map[string]string{"fsType": "zfs"}})
			return err
		}, codes.InvalidArgument},
		{"delete without volume id", func() error {
			_, err := s.DeleteVolume(ctrlCtx, &csipb.DeleteVolumeRequest{})
			return err
		}, codes.InvalidArgument},
		{"delete unknown volume", func() error {
			_, err := s.DeleteVolume(ctrlCtx, &csipb.DeleteVolumeRequest{VolumeId: unknown})
			return err
		}, codes.OK},
		{"delete malformed volume id", func() error {
			_, err := s.DeleteVolume(ctrlCtx, &csipb.DeleteVolumeRequest{VolumeId: "../x"})
			return err
		}, codes.OK},
		{"delete", func() error {
			_, err := s.DeleteVolume(ctrlCtx, &csipb.DeleteVolumeRequest{VolumeId: id})
			return err
		}, codes.OK},
	}
	for _, tc := range tests {
		if err := tc.call(); status.Code(err) != tc.want {
			t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestSecondConcurrentOperationIsAborted(t *testing.T) {
	s, _ := newCtrlServer(t, controllertest.SixNodes)
	id := ctrlMustCreate(t, s, "pvc-1").GetVolumeId()
	release, err := s.inflight.begin("volume " + id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.DeleteVolume(ctrlCtx, &csipb.DeleteVolumeRequest{VolumeId: id})
	if status.Code(err) != codes.Aborted {
		t.Errorf("DeleteVolume during another operation: %v, want Aborted", err)
	}
	release()
	if _, err := s.DeleteVolume(ctrlCtx, &csipb.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Errorf("DeleteVolume afterwards: %v", err)
	}

	release, _ = s.inflight.begin(`volume name "pvc-2"`)
	defer release()
	if _, err := s.CreateVolume(ctrlCtx, ctrlCreateRequest("pvc-2")); status.Code(err) != codes.Aborted {
		t.Errorf("CreateVolume during another operation: %v, want Aborted", err)
	}
}

func TestListVolumesPages(t *testing.T) {
	s, _ := newCtrlServer(t, controllertest.SixNodes)
	want := map[string]bool{}
	for _, name := range []string{"p1", "p2", "p3", "p4", "p5"} {
		want[ctrlMustCreate(t, s, name).GetVolumeId()] = true
	}
	seen, token, pages := map[string]bool{}, "", 0
	for {
		resp, err := s.ListVolumes(ctrlCtx, &csipb.ListVolumesRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range resp.GetEntries() {
			seen[e.GetVolume().GetVolumeId()] = true
			if c := e.GetStatus().GetVolumeCondition(); c.GetAbnormal() || c.GetMessage() == "" {
				t.Errorf("condition %v", c)
			}
		}
		if token = resp.GetNextToken(); token == "" {
			break
		}
	}
	if pages != 3 || len(seen) != 5 {
		t.Errorf("%d pages, %d volumes; want 3, 5", pages, len(seen))
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("volume %s not listed", id)
		}
	}
}

func TestControllerGetVolumeCondition(t *testing.T) {
	s, e := newCtrlServer(t, controllertest.SixNodes)
	id := ctrlMustCreate(t, s, "pvc-1").GetVolumeId()
	if _, err := s.ControllerPublishVolume(ctrlCtx, &csipb.ControllerPublishVolumeRequest{VolumeId: id, NodeId: "c2", VolumeCapability: ctrlMountCap("", ctrlSNW)}); err != nil {
		t.Fatal(err)
	}
	// The publish moved the layout to epoch 2 (a new attachment generation).
	if _, err := e.C.ReplicaFaulted(ctrlCtx, id, 2, "b1", "ack timeout"); err != nil {
		t.Fatal(err)
	}
	resp, err := s.ControllerGetVolume(ctrlCtx, &csipb.ControllerGetVolumeRequest{VolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetStatus()
	wantMsg := "2 of 3 replicas in sync, epoch 3, primary a1; b1 in zone-b is Faulted"
	if !st.GetVolumeCondition().GetAbnormal() || st.GetVolumeCondition().GetMessage() != wantMsg ||
		strings.Join(st.GetPublishedNodeIds(), ",") != "c2" {
		t.Errorf("status %v, want abnormal %q published on c2", st, wantMsg)
	}
}

func TestVolumeConditionNamesASilentPrimary(t *testing.T) {
	s, e := newCtrlServer(t, controllertest.SixNodes)
	id := ctrlMustCreate(t, s, "pvc-1").GetVolumeId()
	e.Clock.Advance(time.Minute)
	for _, n := range controllertest.SixNodes {
		if n.ID != "a1" { // a1, the primary, has gone quiet
			if err := e.C.Heartbeat(n.ID, 10<<30); err != nil {
				t.Fatal(err)
			}
		}
	}
	resp, err := s.ControllerGetVolume(ctrlCtx, &csipb.ControllerGetVolumeRequest{VolumeId: id})
	if err != nil {
		t.Fatal(err)
	}
	cond := resp.GetStatus().GetVolumeCondition()
	wantMsg := "3 of 3 replicas in sync, epoch 1, primary a1; node a1 in zone-a has stopped heartbeating"
	if !cond.GetAbnormal() || cond.GetMessage() != wantMsg {
		t.Errorf("condition %v, want abnormal %q", cond, wantMsg)
	}
}

func TestGetCapacity(t *testing.T) {
	s, _ := newCtrlServer(t, controllertest.SixNodes)
	tests := []struct {
		name string
		req  *csipb.GetCapacityRequest
		want int64
	}{
		{"everywhere", &csipb.GetCapacityRequest{}, 60 << 30},
		{"one zone", &csipb.GetCapacityRequest{AccessibleTopology: &csipb.Topology{Segments: map[string]string{"topology.kubernetes.io/zone": "zone-b"}}}, 20 << 30},
		{"unknown zone", &csipb.GetCapacityRequest{AccessibleTopology: &csipb.Topology{Segments: map[string]string{"topology.kubernetes.io/zone": "zone-x"}}}, 0},
		{"unsupported capability", &csipb.GetCapacityRequest{VolumeCapabilities: []*csipb.VolumeCapability{ctrlBlockCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)}}, 0},
	}
	for _, tc := range tests {
		resp, err := s.GetCapacity(ctrlCtx, tc.req)
		if err != nil || resp.GetAvailableCapacity() != tc.want {
			t.Errorf("%s: GetCapacity = %d, %v; want %d", tc.name, resp.GetAvailableCapacity(), err, tc.want)
		}
	}
}
