package agent

import (
	"errors"
	"fmt"
	"net"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// errInvalidArgument marks a request the Node service refuses as
// malformed, whatever the node's state.
var errInvalidArgument = errors.New("invalid argument")

// sizeAlignment is the granularity of volume sizes: every block device
// sector size divides it.
const sizeAlignment = 4096

// invalidField names the offending field of a request.
func invalidField(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", errInvalidArgument, field, fmt.Sprintf(format, args...))
}

func validateVolumeID(field, id string) error {
	if err := api.ValidateVolumeID(id); err != nil {
		return fmt.Errorf("%w: %s: %w", errInvalidArgument, field, err)
	}
	return nil
}

func validateCreateReplica(req *apiv1.CreateReplicaRequest) error {
	return validateSize(req.GetVolumeId(), req.GetSizeBytes())
}

// validateSize checks the volume id and size of CreateReplica and
// ExpandReplica.
func validateSize(volumeID string, size int64) error {
	if err := validateVolumeID("volume_id", volumeID); err != nil {
		return err
	}
	if size <= 0 || size%sizeAlignment != 0 {
		return invalidField("size_bytes", "%d is not a positive multiple of %d", size, sizeAlignment)
	}
	return nil
}

// validateLayout checks a layout on its own; whether it fits this node's
// replica is the agent's business.
func validateLayout(l *apiv1.Layout) error {
	if l == nil {
		return invalidField("layout", "required")
	}
	if err := validateVolumeID("layout.volume_id", l.GetVolumeId()); err != nil {
		return err
	}
	switch {
	case l.GetSizeBytes() <= 0 || l.GetSizeBytes()%sizeAlignment != 0:
		return invalidField("layout.size_bytes", "%d is not a positive multiple of %d", l.GetSizeBytes(), sizeAlignment)
	case l.GetEpoch() == 0:
		return invalidField("layout.epoch", "must be at least 1")
	case l.GetPrimary() == "":
		return invalidField("layout.primary", "required")
	case len(l.GetReplicas()) == 0:
		return invalidField("layout.replicas", "required")
	case l.GetMinInSync() < 0 || int(l.GetMinInSync()) > len(l.GetReplicas()):
		return invalidField("layout.min_in_sync", "%d is outside 0 to %d, the replica count", l.GetMinInSync(), len(l.GetReplicas()))
	}
	if err := validateReplicas(l.GetReplicas()); err != nil {
		return err
	}
	return validatePrimary(l)
}

func validateReplicas(rs []*apiv1.ReplicaInfo) error {
	seen := map[string]bool{}
	for i, r := range rs {
		field := fmt.Sprintf("layout.replicas[%d]", i)
		if err := validateReplica(field, r); err != nil {
			return err
		}
		if seen[r.GetNodeId()] {
			return invalidField(field+".node_id", "%q appears twice", r.GetNodeId())
		}
		seen[r.GetNodeId()] = true
	}
	return nil
}

func validateReplica(field string, r *apiv1.ReplicaInfo) error {
	if r.GetNodeId() == "" {
		return invalidField(field+".node_id", "required")
	}
	if host, port, err := net.SplitHostPort(r.GetAddress()); err != nil || host == "" || port == "" {
		return invalidField(field+".address", "%q is not host:port", r.GetAddress())
	}
	if api.StateFromProto(r.GetState()) == "" {
		return invalidField(field+".state", "%v is not a replica state", r.GetState())
	}
	return nil
}

// validatePrimary enforces that only an InSync replica serves (I4).
func validatePrimary(l *apiv1.Layout) error {
	for _, r := range l.GetReplicas() {
		if r.GetNodeId() != l.GetPrimary() {
			continue
		}
		if r.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC {
			return invalidField("layout.primary", "%q is %v, not IN_SYNC", l.GetPrimary(), r.GetState())
		}
		return nil
	}
	return invalidField("layout.primary", "%q is not one of layout.replicas", l.GetPrimary())
}
