package kube

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of Trireme's custom resources.
const (
	Group   = "trireme.dev"
	Version = "v1alpha1"
)

// The custom resources, cluster-scoped. deploy/crds defines them.
var (
	// VolumeResource holds one TriremeVolume per volume.
	VolumeResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "triremevolumes"}
	// NameResource holds one TriremeVolumeName per volume name: the claim
	// that keeps names unique.
	NameResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "triremevolumenames"}
	// NodeResource holds one TriremeNode per storage node.
	NodeResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "triremenodes"}
)

// Kinds of the custom resources.
const (
	VolumeKind = "TriremeVolume"
	NameKind   = "TriremeVolumeName"
	NodeKind   = "TriremeNode"
)

// The objects are converted to and from unstructured maps, so these types
// need no generated deep-copy code. Counters that are uint64 in package
// store (epochs, generations, revisions) are decimal strings: a JSON
// number in the Kubernetes API is an int64 at most, and a uint64 above
// that would come back changed.

// volumeObject is a TriremeVolume: the record in spec, a summary for
// kubectl's printer columns in status.
type volumeObject struct {
	Spec   volumeSpec   `json:"spec"`
	Status volumeStatus `json:"status"`
}

type volumeSpec struct {
	VolumeID          string            `json:"volumeID"`
	Name              string            `json:"name"`
	SizeBytes         int64             `json:"sizeBytes"`
	Parameters        map[string]string `json:"parameters,omitempty"`
	Fingerprint       string            `json:"fingerprint,omitempty"`
	Epoch             string            `json:"epoch"`
	Primary           string            `json:"primary,omitempty"`
	Replicas          []replicaSpec     `json:"replicas,omitempty"`
	Attachment        attachmentSpec    `json:"attachment"`
	MinInSyncReplicas int64             `json:"minInSyncReplicas"`
	Created           string            `json:"created"`
	Revision          string            `json:"revision"`
}

type replicaSpec struct {
	NodeID  string `json:"nodeID"`
	Zone    string `json:"zone,omitempty"`
	Address string `json:"address,omitempty"`
	State   string `json:"state"`
}

type attachmentSpec struct {
	NodeID     string `json:"nodeID,omitempty"`
	Generation string `json:"generation"`
	// EnforcedGeneration is Layout.AttachmentGeneration: the generation
	// the data plane enforces.
	EnforcedGeneration string `json:"enforcedGeneration"`
}

// volumeStatus is derived from spec on every write; nothing reads it back.
type volumeStatus struct {
	Size     string `json:"size"`
	Replicas int64  `json:"replicas"`
	InSync   int64  `json:"inSync"`
	Zones    string `json:"zones"`
	Health   string `json:"health"`
	Sync     string `json:"sync"`
}

// nameObject is a TriremeVolumeName: the claim of a name by a volume id.
type nameObject struct {
	Spec nameSpec `json:"spec"`
}

type nameSpec struct {
	Name     string `json:"name"`
	VolumeID string `json:"volumeID"`
}

// nodeObject is a TriremeNode.
type nodeObject struct {
	Spec nodeSpec `json:"spec"`
}

type nodeSpec struct {
	NodeID        string            `json:"nodeID"`
	Zone          string            `json:"zone,omitempty"`
	Topology      map[string]string `json:"topology,omitempty"`
	DataAddress   string            `json:"dataAddress,omitempty"`
	APIAddress    string            `json:"apiAddress,omitempty"`
	CapacityBytes int64             `json:"capacityBytes"`
	LastHeartbeat string            `json:"lastHeartbeat"`
	Revision      string            `json:"revision"`
}
