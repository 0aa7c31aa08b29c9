package controller

import "github.com/trireme-csi/trireme/pkg/store"

// Reasons of the events the controller records about volumes. They are
// one CamelCase word each, as Kubernetes event reasons are.
const (
	// ReasonFailover: another replica became the primary.
	ReasonFailover = "Failover"
	// ReasonDegraded: a replica left InSync; the volume runs with fewer
	// copies.
	ReasonDegraded = "Degraded"
	// ReasonResyncFinished: a Syncing replica finished its copy and is
	// InSync.
	ReasonResyncFinished = "ResyncFinished"
	// ReasonReplicaReplaced: a lost replica was replaced by a new one on
	// another node.
	ReasonReplicaReplaced = "ReplicaReplaced"
	// ReasonExpanded: the volume grew; the filesystem on it grows when
	// its node expands it.
	ReasonExpanded = "Expanded"
)

// EventSink records events about volumes where operators look for them:
// in Kubernetes, on the volume's custom resource and its
// PersistentVolumeClaim. VolumeEvent must not block: the failover path
// calls it.
type EventSink interface {
	// VolumeEvent records that reason happened to v, as the record stands
	// after it. warning marks events that need attention (Degraded).
	VolumeEvent(v store.Volume, reason, message string, warning bool)
}

// noEvents is the EventSink of a controller outside Kubernetes, the
// default of Options.Events: it drops every event; the controller's log
// has them all the same.
type noEvents struct{}

// VolumeEvent implements EventSink.
func (noEvents) VolumeEvent(store.Volume, string, string, bool) {}
