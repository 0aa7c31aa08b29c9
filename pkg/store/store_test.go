package store

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/replication"
)

func validVolume() Volume {
	return Volume{
		ID: "vol-1", Name: "pvc-1", Size: 4096,
		Layout: replication.Layout{
			VolumeID: "vol-1", Size: 4096, Epoch: 3,
			Replicas: []replication.ReplicaInfo{{NodeID: "node-a", State: replication.InSync}},
		},
		Attachment: Attachment{NodeID: "node-a", Generation: 2},
	}
}

func TestVolumeValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(v *Volume)
		valid bool
	}{
		{"valid", func(*Volume) {}, true},
		{"128-byte name", func(v *Volume) { v.Name = strings.Repeat("é", 64) }, true},
		{"NUL in name", func(v *Volume) { v.Name = "a\x00b" }, true},
		{"zero created time", func(v *Volume) { v.Created = time.Time{} }, true},
		{"129-byte name", func(v *Volume) { v.Name = strings.Repeat("n", 129) }, false},
		{"empty name", func(v *Volume) { v.Name = "" }, false},
		{"name not UTF-8", func(v *Volume) { v.Name = "\xfe" }, false},
		{"id not valid", func(v *Volume) { v.ID, v.Layout.VolumeID = "..", ".." }, false},
		{"negative size", func(v *Volume) { v.Size, v.Layout.Size = -1, -1 }, false},
		{"layout of another volume", func(v *Volume) { v.Layout.VolumeID = "vol-2" }, false},
		{"layout size differs", func(v *Volume) { v.Layout.Size = 1 }, false},
		{"negative minInSync", func(v *Volume) { v.MinInSyncReplicas = -2 }, false},
		{"created after year 9999", func(v *Volume) { v.Created = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, false},
		{"replica zone not UTF-8", func(v *Volume) { v.Layout.Replicas[0].Zone = "\xff" }, false},
		{"parameter key not UTF-8", func(v *Volume) { v.Parameters = map[string]string{"\xff": "v"} }, false},
		{"fingerprint not UTF-8", func(v *Volume) { v.Fingerprint = string([]byte{0x80}) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := validVolume()
			tc.edit(&v)
			err := v.Validate()
			if tc.valid && err != nil || !tc.valid && !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate: error %v, want valid %v", err, tc.valid)
			}
		})
	}
}

func TestValidateUpdate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(v *Volume)
		valid bool
	}{
		{"unchanged", func(*Volume) {}, true},
		{"higher epoch", func(v *Volume) { v.Layout.Epoch = 4 }, true},
		{"attach", func(v *Volume) { v.Attachment.Attach("node-b") }, true},
		{"detach", func(v *Volume) { v.Attachment.Detach() }, true},
		{"rename", func(v *Volume) { v.Name = "pvc-2" }, false},
		{"lower epoch", func(v *Volume) { v.Layout.Epoch = 2 }, false},
		{"lower generation", func(v *Volume) { v.Attachment.Generation = 1 }, false},
		{"grow", func(v *Volume) { v.Size, v.Layout.Size = 2*v.Size, 2*v.Size }, true},
		{"shrink", func(v *Volume) { v.Size, v.Layout.Size = v.Size/2, v.Size/2 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := validVolume()
			tc.edit(&next)
			err := ValidateUpdate(validVolume(), next)
			if tc.valid && err != nil || !tc.valid && !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateUpdate: error %v, want valid %v", err, tc.valid)
			}
		})
	}
}

func TestNodeValidate(t *testing.T) {
	tests := []struct {
		name  string
		node  Node
		valid bool
	}{
		{"id only", Node{ID: "n"}, true},
		{"256-byte id", Node{ID: strings.Repeat("n", MaxNodeIDLen)}, true},
		{"empty id", Node{}, false},
		{"257-byte id", Node{ID: strings.Repeat("n", MaxNodeIDLen+1)}, false},
		{"negative capacity", Node{ID: "n", CapacityBytes: -1}, false},
		{"topology not UTF-8", Node{ID: "n", Topology: map[string]string{"zone": "\xff"}}, false},
		{"heartbeat before year 0", Node{ID: "n", LastHeartbeat: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.node.Validate()
			if tc.valid && err != nil || !tc.valid && !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate: error %v, want valid %v", err, tc.valid)
			}
		})
	}
}

func TestNewVolumeID(t *testing.T) {
	format := regexp.MustCompile(`^vol-[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewVolumeID()
		if !format.MatchString(id) {
			t.Fatalf("NewVolumeID() = %q, want vol- and 32 hex digits", id)
		}
		if err := api.ValidateVolumeID(id); err != nil {
			t.Fatalf("NewVolumeID() = %q: %v", id, err)
		}
		if seen[id] {
			t.Fatalf("NewVolumeID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestAttachmentGenerationCountsAttaches(t *testing.T) {
	var a Attachment
	steps := []struct {
		op   func()
		want Attachment
	}{
		{func() { a.Attach("node-a") }, Attachment{NodeID: "node-a", Generation: 1}},
		{func() { a.Detach() }, Attachment{NodeID: "", Generation: 1}},
		{func() { a.Attach("node-b") }, Attachment{NodeID: "node-b", Generation: 2}},
		{func() { a.Attach("node-b") }, Attachment{NodeID: "node-b", Generation: 3}},
	}
	for i, st := range steps {
		st.op()
		if a != st.want {
			t.Errorf("step %d: attachment %+v, want %+v", i, a, st.want)
		}
		if a.Attached() != (st.want.NodeID != "") {
			t.Errorf("step %d: Attached() = %v", i, a.Attached())
		}
	}
}
