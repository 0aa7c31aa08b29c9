package bolt

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// goldenVolume and goldenVolumeJSON pin the on-disk format of version 1:
// a change that breaks this test breaks every existing store file.
var goldenVolume = store.Volume{
	ID: "vol-0f", Name: "pvc-1", Size: 1 << 30,
	Parameters:  map[string]string{"replicas": "3", "fsType": "ext4"},
	Fingerprint: "sha256:ab",
	Layout: replication.Layout{
		VolumeID: "vol-0f", Size: 1 << 30, Epoch: 7, Primary: "node-a",
		Replicas: []replication.ReplicaInfo{
			{NodeID: "node-a", Zone: "zone-a", Address: "10.0.0.1:7000", State: replication.InSync},
			{NodeID: "node-b", Zone: "zone-b", Address: "10.0.0.2:7000", State: replication.Syncing},
		},
		AttachmentGeneration: 3,
	},
	Attachment:        store.Attachment{NodeID: "node-x", Generation: 3},
	MinInSyncReplicas: 2,
	Created:           time.Date(2026, 3, 4, 5, 6, 7, 8, time.UTC),
	Revision:          12,
}

const goldenVolumeJSON = `{"version":1,"id":"vol-0f","name":"pvc-1","size":1073741824,` +
	`"parameters":{"fsType":"ext4","replicas":"3"},"fingerprint":"sha256:ab","epoch":7,"primary":"node-a",` +
	`"replicas":[{"node":"node-a","zone":"zone-a","address":"10.0.0.1:7000","state":"InSync"},` +
	`{"node":"node-b","zone":"zone-b","address":"10.0.0.2:7000","state":"Syncing"}],` +
	`"attachedNode":"node-x","attachGeneration":3,"enforcedGeneration":3,"minInSyncReplicas":2,` +
	`"created":"2026-03-04T05:06:07.000000008Z","revision":12}`

var goldenNode = store.Node{
	ID: "node-a", Zone: "zone-a", Topology: map[string]string{"topology.kubernetes.io/zone": "zone-a"},
	DataAddress: "10.0.0.1:7000", APIAddress: "10.0.0.1:7001", CapacityBytes: 1 << 40,
	LastHeartbeat: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC), Revision: 4,
}

const goldenNodeJSON = `{"version":1,"id":"node-a","zone":"zone-a",` +
	`"topology":{"topology.kubernetes.io/zone":"zone-a"},"dataAddress":"10.0.0.1:7000",` +
	`"apiAddress":"10.0.0.1:7001","capacityBytes":1099511627776,` +
	`"lastHeartbeat":"2026-03-04T05:06:07Z","revision":4}`

func TestVolumeGoldenEncoding(t *testing.T) {
	b, err := encodeVolume(goldenVolume)
	if err != nil {
		t.Fatalf("encodeVolume: %v", err)
	}
	if string(b) != goldenVolumeJSON {
		t.Errorf("encodeVolume:\n got %s\nwant %s", b, goldenVolumeJSON)
	}
	got, err := decodeVolume([]byte(goldenVolumeJSON))
	if err != nil || !reflect.DeepEqual(got, goldenVolume) {
		t.Errorf("decodeVolume: %+v, %v\nwant %+v", got, err, goldenVolume)
	}
}

func TestNodeGoldenEncoding(t *testing.T) {
	b, err := encodeNode(goldenNode)
	if err != nil {
		t.Fatalf("encodeNode: %v", err)
	}
	if string(b) != goldenNodeJSON {
		t.Errorf("encodeNode:\n got %s\nwant %s", b, goldenNodeJSON)
	}
	got, err := decodeNode([]byte(goldenNodeJSON))
	if err != nil || !reflect.DeepEqual(got, goldenNode) {
		t.Errorf("decodeNode: %+v, %v\nwant %+v", got, err, goldenNode)
	}
}

func TestDecodeVolumeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ``},
		{"not JSON", `version 1`},
		{"truncated", goldenVolumeJSON[:40]},
		{"no version", `{"id":"vol-0f","name":"pvc-1","size":1}`},
		{"newer version", `{"version":2,"id":"vol-0f","name":"pvc-1","size":1}`},
		{"wrong type", `{"version":1,"id":"vol-0f","name":"pvc-1","size":"big"}`},
		{"no id", `{"version":1,"name":"pvc-1","size":1}`},
		{"no name", `{"version":1,"id":"vol-0f","size":1}`},
		{"zero size", `{"version":1,"id":"vol-0f","name":"pvc-1","size":0}`},
		{"bad id", `{"version":1,"id":"vol/0f","name":"pvc-1","size":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := decodeVolume([]byte(tc.in))
			if !errors.Is(err, ErrCorrupt) || errors.Is(err, store.ErrInvalid) {
				t.Errorf("decodeVolume: error %v, want %v alone", err, ErrCorrupt)
			}
			if !reflect.DeepEqual(v, store.Volume{}) {
				t.Errorf("decodeVolume returned %+v with its error", v)
			}
		})
	}
}

func TestDecodeNodeErrors(t *testing.T) {
	for _, in := range []string{``, `[]`, `{"version":1}`, `{"version":0,"id":"node-a"}`, `{"version":1,"id":"n","capacityBytes":-1}`} {
		if _, err := decodeNode([]byte(in)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeNode(%s): error %v, want %v", in, err, ErrCorrupt)
		}
	}
}

// FuzzDecodeVolume checks that decodeVolume never panics, and that a record
// it accepts is valid and survives encoding and decoding unchanged.
func FuzzDecodeVolume(f *testing.F) {
	f.Add([]byte(goldenVolumeJSON))
	f.Add([]byte(`{"version":1,"id":"vol-1","name":"\u0000/ü","size":1,"created":"0000-01-01T00:00:00+01:00"}`))
	f.Add([]byte(`{"version":1,"id":"vol-1","name":"n","size":1,"replicas":[],"parameters":{}}`))
	f.Add([]byte(`{"version":1,"ID":"vol-1","Name":"n","size":1,"id":"vol-2"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeVolume(b)
		if err != nil {
			return
		}
		if err := v.Validate(); err != nil {
			t.Fatalf("decoded an invalid volume: %v", err)
		}
		re, err := encodeVolume(v)
		if err != nil {
			t.Fatalf("encode decoded volume %+v: %v", v, err)
		}
		again, err := decodeVolume(re)
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("round trip of %+v: got %+v, %v", v, again, err)
		}
	})
}

// FuzzDecodeNode is FuzzDecodeVolume for node records.
func FuzzDecodeNode(f *testing.F) {
	f.Add([]byte(goldenNodeJSON))
	f.Add([]byte(`{"version":1,"id":"n","topology":{},"lastHeartbeat":"9999-12-31T23:59:59-01:00"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNode(b)
		if err != nil {
			return
		}
		re, err := encodeNode(n)
		if err != nil {
			t.Fatalf("encode decoded node %+v: %v", n, err)
		}
		again, err := decodeNode(re)
		if err != nil || !reflect.DeepEqual(again, n) {
			t.Fatalf("round trip of %+v: got %+v, %v", n, again, err)
		}
	})
}
