package api

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
)

func TestValidateVolumeID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"pvc-0a1b2c3d", true},
		{"Vol_1.2-3", true},
		{"...", true},
		{strings.Repeat("v", MaxVolumeIDLen), true},
		{"", false},
		{".", false},
		{"..", false},
		{"../etc", false},
		{"a/b", false},
		{"a\\b", false},
		{"a b", false},
		{"vøl", false},
		{strings.Repeat("v", MaxVolumeIDLen+1), false},
	}
	for _, tt := range tests {
		err := ValidateVolumeID(tt.id)
		if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidVolumeID)) {
			t.Errorf("ValidateVolumeID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestLayoutRoundTrip(t *testing.T) {
	l := replication.Layout{VolumeID: "v", Size: 4096, Epoch: 9, Primary: "a", Replicas: []replication.ReplicaInfo{
		{NodeID: "a", Zone: "z1", Address: "10.0.0.1:7600", State: replication.InSync},
		{NodeID: "b", Zone: "z2", Address: "10.0.0.2:7600", State: replication.Syncing},
		{NodeID: "c", Zone: "z3", Address: "10.0.0.3:7600", State: replication.Faulted},
	}, AttachmentGeneration: 5}
	if got := LayoutFromProto(LayoutToProto(l)); !reflect.DeepEqual(got, l) {
		t.Errorf("round trip = %+v, want %+v", got, l)
	}
}

func TestFormatBytes(t *testing.T) {
	tests := map[int64]string{0: "0B", 1023: "1023B", 1024: "1KiB", 1536: "1.5KiB", 1 << 30: "1GiB", 5 << 40: "5TiB"}
	for n, want := range tests {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWriteVolumeTable(t *testing.T) {
	inSync, syncing := apiv1.ReplicaState_REPLICA_STATE_IN_SYNC, apiv1.ReplicaState_REPLICA_STATE_SYNCING
	list := &apiv1.ListVolumesResponse{NodeId: "a", Zone: "z1", Volumes: []*apiv1.Volume{
		{VolumeId: "v1", SizeBytes: 1 << 30, Epoch: 3, Role: apiv1.Role_ROLE_PRIMARY, Replicas: []*apiv1.ReplicaStatus{
			{NodeId: "a", State: inSync, Connected: true, SyncedBytes: 1 << 30, TotalBytes: 1 << 30},
			{NodeId: "b", State: syncing, Connected: true, SyncedBytes: 1 << 28, TotalBytes: 1 << 30},
			{NodeId: "c", State: inSync, Fault: "replica did not acknowledge in time", SyncedBytes: 1 << 30, TotalBytes: 1 << 30},
		}},
		{VolumeId: "v2", SizeBytes: 4096, Epoch: 1, Role: apiv1.Role_ROLE_REPLICA, Rebuilding: true,
			Layout: &apiv1.Layout{Replicas: []*apiv1.ReplicaInfo{{NodeId: "a", State: syncing}}}},
	}}
	var b bytes.Buffer
	if err := WriteVolumeTable(&b, list); err != nil {
		t.Fatal(err)
	}
	want := `NODE a  ZONE z1
VOLUME  SIZE  EPOCH  ROLE     REPLICA  STATE    CONNECTED  SYNC                 FAULT
v1      1GiB  3      primary  a        InSync   yes        100%                 -
v1      1GiB  3      primary  b        Syncing  yes        25.0% (256MiB/1GiB)  -
v1      1GiB  3      primary  c        InSync   no         100%                 replica did not acknowledge in time
v2      4KiB  1      replica  a        Syncing  -          rebuilding           -
`
	if b.String() != want {
		t.Errorf("table =\n%s\nwant\n%s", b.String(), want)
	}
}
