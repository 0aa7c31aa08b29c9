package store

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/trireme-csi/trireme/pkg/replication"
)

// VolumeIDPrefix starts every id that NewVolumeID makes.
const VolumeIDPrefix = "vol-"

// Volume is the controller's record of one CSI volume.
type Volume struct {
	// ID is the CSI volume id: internal, never derived from Name, and
	// valid under api.ValidateVolumeID. NewVolumeID makes one.
	ID string
	// Name is the CSO's name from CreateVolume: 1 to MaxNameLen bytes of
	// valid UTF-8, any characters. No two volumes share a name.
	Name string
	// Size is the volume's capacity in bytes. Layout.Size must equal it.
	Size int64
	// Parameters are the StorageClass parameters the volume was made with.
	Parameters map[string]string
	// Fingerprint digests what CreateVolume was asked for (size range,
	// capabilities, parameters, topology) so that a repeated CreateVolume
	// with the same name can be told apart from a different request. The
	// store keeps it as an opaque string.
	Fingerprint string
	// Layout is what the data plane acts on: epoch, primary and replicas.
	// Layout.VolumeID must equal ID.
	Layout replication.Layout
	// Attachment says which node the volume is published to.
	Attachment Attachment
	// MinInSyncReplicas is the fewest InSync replicas the volume may
	// acknowledge writes with; below it writes stop.
	MinInSyncReplicas int
	// Created is when the volume was created. The store keeps it in UTC.
	Created time.Time
	// Revision is managed by the store: see Store.
	Revision uint64
}

// Attachment is the node a volume is published to, if any.
type Attachment struct {
	// NodeID is the node the volume is published to; empty if none.
	NodeID string
	// Generation counts publishes: it goes up by one on every Attach and
	// never goes down, so a node can tell a stale attachment from the
	// current one. The store refuses an update that lowers it.
	Generation uint64
}

// Attached reports whether the volume is published to a node.
func (a Attachment) Attached() bool { return a.NodeID != "" }

// Attach publishes the volume to the node and bumps the generation.
func (a *Attachment) Attach(nodeID string) {
	a.NodeID = nodeID
	a.Generation++
}

// Detach clears the node and keeps the generation.
func (a *Attachment) Detach() { a.NodeID = "" }

// Node is the controller's record of one storage node.
type Node struct {
	// ID is the CSI node id: 1 to MaxNodeIDLen bytes of valid UTF-8.
	ID string
	// Zone is the node's availability zone; empty if it has none.
	Zone string
	// Topology is the node's whole topology segment as NodeGetInfo
	// reports it, zone key included.
	Topology map[string]string
	// DataAddress is host:port of the node's data server.
	DataAddress string
	// APIAddress is host:port of the node agent's gRPC API.
	APIAddress string
	// CapacityBytes is the space the node offers for replicas.
	CapacityBytes int64
	// LastHeartbeat is when the node last reported. The store keeps it in
	// UTC. Every heartbeat written here costs a durable write; a
	// controller may keep heartbeats in memory and persist them less often.
	LastHeartbeat time.Time
	// Revision is managed by the store: see Store.
	Revision uint64
}

// NewVolumeID returns VolumeIDPrefix and 128 random bits in hex.
func NewVolumeID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails: see crypto/rand.Read
	return VolumeIDPrefix + hex.EncodeToString(b[:])
}
