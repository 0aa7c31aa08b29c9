package replication

// ReplicaState says whether a replica counts for acknowledgements.
type ReplicaState string

const (
	// InSync replicas hold every acknowledged write; the primary waits for
	// each of them before it acknowledges.
	InSync ReplicaState = "InSync"
	// Syncing replicas receive live writes and a background copy; they do
	// not count for acknowledgement.
	Syncing ReplicaState = "Syncing"
	// Faulted replicas are out of the write path.
	Faulted ReplicaState = "Faulted"
)

// ReplicaInfo places one replica of a volume.
type ReplicaInfo struct {
	NodeID  string       `json:"nodeID"`
	Zone    string       `json:"zone"`
	Address string       `json:"address"` // host:port of the node's data server
	State   ReplicaState `json:"state"`
}

// Layout is the part of a volume record that the data plane acts on. Every
// change to Replicas, Primary or AttachmentGeneration comes with a higher
// Epoch.
type Layout struct {
	VolumeID string        `json:"volumeID"`
	Size     int64         `json:"size"`
	Epoch    uint64        `json:"epoch"`
	Primary  string        `json:"primary"` // node id of the primary replica
	Replicas []ReplicaInfo `json:"replicas"`
	// AttachmentGeneration is the volume's attachment generation: the
	// primary refuses frontends that present a lower one (invariant I3).
	AttachmentGeneration uint64 `json:"attachmentGeneration"`
	// MinInSync is the fewest replicas, the primary included, that must
	// have a write before the primary acknowledges it; below that, writes
	// wait. Zero or one means the primary alone may acknowledge, once
	// every InSync replica has the write (I1 holds either way).
	MinInSync int `json:"minInSync,omitempty"`
}
