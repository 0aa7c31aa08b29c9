package bolt

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// recordVersion is the version of the JSON records this build writes and
// reads. The on-disk records are their own types, apart from store.Volume
// and replication.Layout, so that renaming a Go field cannot silently
// change the file format. A change to the format bumps the version and
// teaches decode the old one.
const recordVersion = 1

// volumeRecord is a store.Volume on disk. Layout.VolumeID and Layout.Size
// are not kept: they equal ID and Size.
type volumeRecord struct {
	Version          int               `json:"version"`
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	Size             int64             `json:"size"`
	Parameters       map[string]string `json:"parameters,omitempty"`
	Fingerprint      string            `json:"fingerprint,omitempty"`
	Epoch            uint64            `json:"epoch"`
	Primary          string            `json:"primary,omitempty"`
	Replicas         []replicaRecord   `json:"replicas,omitempty"`
	AttachedNode     string            `json:"attachedNode,omitempty"`
	AttachGeneration uint64            `json:"attachGeneration"`
	// EnforcedGeneration is Layout.AttachmentGeneration: the attachment
	// generation the data plane was told to enforce. Records written
	// before it existed decode to 0, which enforces nothing.
	EnforcedGeneration uint64    `json:"enforcedGeneration,omitempty"`
	MinInSyncReplicas  int       `json:"minInSyncReplicas"`
	Created            time.Time `json:"created"`
	Revision           uint64    `json:"revision"`
}

type replicaRecord struct {
	Node    string `json:"node"`
	Zone    string `json:"zone,omitempty"`
	Address string `json:"address,omitempty"`
	State   string `json:"state"`
}

// nodeRecord is a store.Node on disk.
type nodeRecord struct {
	Version       int               `json:"version"`
	ID            string            `json:"id"`
	Zone          string            `json:"zone,omitempty"`
	Topology      map[string]string `json:"topology,omitempty"`
	DataAddress   string            `json:"dataAddress,omitempty"`
	APIAddress    string            `json:"apiAddress,omitempty"`
	CapacityBytes int64             `json:"capacityBytes"`
	LastHeartbeat time.Time         `json:"lastHeartbeat"`
	Revision      uint64            `json:"revision"`
}

func encodeVolume(v store.Volume) ([]byte, error) {
	r := volumeRecord{
		Version: recordVersion, ID: v.ID, Name: v.Name, Size: v.Size,
		Parameters: v.Parameters, Fingerprint: v.Fingerprint,
		Epoch: v.Layout.Epoch, Primary: v.Layout.Primary,
		AttachedNode: v.Attachment.NodeID, AttachGeneration: v.Attachment.Generation,
		EnforcedGeneration: v.Layout.AttachmentGeneration,
		MinInSyncReplicas:  v.MinInSyncReplicas, Created: v.Created.UTC(), Revision: v.Revision,
	}
	for _, rep := range v.Layout.Replicas {
		r.Replicas = append(r.Replicas, replicaRecord{
			Node: rep.NodeID, Zone: rep.Zone, Address: rep.Address, State: string(rep.State),
		})
	}
	return json.Marshal(r)
}

func decodeVolume(b []byte) (store.Volume, error) {
	var r volumeRecord
	if err := decodeRecord(b, &r, &r.Version); err != nil {
		return store.Volume{}, err
	}
	v := store.Volume{
		ID: r.ID, Name: r.Name, Size: r.Size,
		Parameters: nilIfEmpty(r.Parameters), Fingerprint: r.Fingerprint,
		Layout: replication.Layout{
			VolumeID: r.ID, Size: r.Size, Epoch: r.Epoch, Primary: r.Primary,
			AttachmentGeneration: r.EnforcedGeneration,
		},
		Attachment:        store.Attachment{NodeID: r.AttachedNode, Generation: r.AttachGeneration},
		MinInSyncReplicas: r.MinInSyncReplicas, Created: r.Created.UTC(), Revision: r.Revision,
	}
	for _, rep := range r.Replicas {
		v.Layout.Replicas = append(v.Layout.Replicas, replication.ReplicaInfo{
			NodeID: rep.Node, Zone: rep.Zone, Address: rep.Address, State: replication.ReplicaState(rep.State),
		})
	}
	if err := v.Validate(); err != nil {
		return store.Volume{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return v, nil
}

func encodeNode(n store.Node) ([]byte, error) {
	return json.Marshal(nodeRecord{
		Version: recordVersion, ID: n.ID, Zone: n.Zone, Topology: n.Topology,
		DataAddress: n.DataAddress, APIAddress: n.APIAddress, CapacityBytes: n.CapacityBytes,
		LastHeartbeat: n.LastHeartbeat.UTC(), Revision: n.Revision,
	})
}

func decodeNode(b []byte) (store.Node, error) {
	var r nodeRecord
	if err := decodeRecord(b, &r, &r.Version); err != nil {
		return store.Node{}, err
	}
	n := store.Node{
		ID: r.ID, Zone: r.Zone, Topology: nilIfEmpty(r.Topology),
		DataAddress: r.DataAddress, APIAddress: r.APIAddress, CapacityBytes: r.CapacityBytes,
		LastHeartbeat: r.LastHeartbeat.UTC(), Revision: r.Revision,
	}
	if err := n.Validate(); err != nil {
		return store.Node{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return n, nil
}

// decodeRecord unmarshals b into rec and checks the version it read. The
// callers then run the record's Validate, so that a record damaged into
// other valid JSON is caught too.
func decodeRecord(b []byte, rec any, version *int) error {
	if err := json.Unmarshal(b, rec); err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if *version != recordVersion {
		return fmt.Errorf("%w: record version %d, this build reads %d", ErrCorrupt, *version, recordVersion)
	}
	return nil
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
