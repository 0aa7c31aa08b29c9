package api

import (
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// StateToProto converts a replica state. An unknown state becomes
// REPLICA_STATE_UNSPECIFIED.
func StateToProto(s replication.ReplicaState) apiv1.ReplicaState {
	switch s {
	case replication.InSync:
		return apiv1.ReplicaState_REPLICA_STATE_IN_SYNC
	case replication.Syncing:
		return apiv1.ReplicaState_REPLICA_STATE_SYNCING
	case replication.Faulted:
		return apiv1.ReplicaState_REPLICA_STATE_FAULTED
	}
	return apiv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

// StateFromProto converts a replica state. REPLICA_STATE_UNSPECIFIED and
// unknown values become the empty state, which no layout check accepts.
func StateFromProto(s apiv1.ReplicaState) replication.ReplicaState {
	switch s {
	case apiv1.ReplicaState_REPLICA_STATE_IN_SYNC:
		return replication.InSync
	case apiv1.ReplicaState_REPLICA_STATE_SYNCING:
		return replication.Syncing
	case apiv1.ReplicaState_REPLICA_STATE_FAULTED:
		return replication.Faulted
	}
	return ""
}

// LayoutToProto converts a layout.
func LayoutToProto(l replication.Layout) *apiv1.Layout {
	out := &apiv1.Layout{
		VolumeId:  l.VolumeID,
		SizeBytes: l.Size,
		Epoch:     l.Epoch,
		Primary:   l.Primary,
		Replicas:  make([]*apiv1.ReplicaInfo, 0, len(l.Replicas)),

		AttachmentGeneration: l.AttachmentGeneration,
		MinInSync:            int32(l.MinInSync),
	}
	for _, r := range l.Replicas {
		out.Replicas = append(out.Replicas, &apiv1.ReplicaInfo{
			NodeId:  r.NodeID,
			Zone:    r.Zone,
			Address: r.Address,
			State:   StateToProto(r.State),
		})
	}
	return out
}

// LayoutFromProto converts a layout; a nil message gives the zero Layout.
// It does not validate.
func LayoutFromProto(l *apiv1.Layout) replication.Layout {
	out := replication.Layout{
		VolumeID: l.GetVolumeId(),
		Size:     l.GetSizeBytes(),
		Epoch:    l.GetEpoch(),
		Primary:  l.GetPrimary(),

		AttachmentGeneration: l.GetAttachmentGeneration(),
		MinInSync:            int(l.GetMinInSync()),
	}
	for _, r := range l.GetReplicas() {
		out.Replicas = append(out.Replicas, replication.ReplicaInfo{
			NodeID:  r.GetNodeId(),
			Zone:    r.GetZone(),
			Address: r.GetAddress(),
			State:   StateFromProto(r.GetState()),
		})
	}
	return out
}

// ReplicaStatusToProto converts what a primary reports about a replica.
func ReplicaStatusToProto(s replication.ReplicaStatus) *apiv1.ReplicaStatus {
	return &apiv1.ReplicaStatus{
		NodeId:      s.NodeID,
		State:       StateToProto(s.State),
		Connected:   s.Connected,
		Fault:       s.Fault,
		SyncedBytes: s.SyncedBytes,
		TotalBytes:  s.TotalBytes,
		CopiedBytes: s.CopiedBytes,
	}
}
