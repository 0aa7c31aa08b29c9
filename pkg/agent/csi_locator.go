package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/csi"
)

// locateTimeout bounds one LocateVolume call to the controller.
const locateTimeout = 5 * time.Second

// registryLocator finds volumes through the controller's Registry
// service. It asks on every call, so a frontend that reconnects after a
// failover reaches the new primary.
type registryLocator struct {
	client  apiv1.RegistryClient
	timeout time.Duration
}

// PrimaryAddress implements csi.VolumeLocator.
func (l *registryLocator) PrimaryAddress(ctx context.Context, volumeID string) (string, error) {
	resp, err := l.locate(ctx, volumeID)
	if err != nil {
		return "", err
	}
	if resp.GetPrimaryNbdAddress() == "" {
		return "", fmt.Errorf("locate %s: %w: no primary address", volumeID, csi.ErrLocatorUnavailable)
	}
	return resp.GetPrimaryNbdAddress(), nil
}

// PublishedNode implements csi.VolumeLocator.
func (l *registryLocator) PublishedNode(ctx context.Context, volumeID string) (string, uint64, error) {
	resp, err := l.locate(ctx, volumeID)
	if err != nil {
		return "", 0, err
	}
	return resp.GetPublishedNodeId(), resp.GetAttachmentGeneration(), nil
}

// Health implements csi.VolumeLocator from the layout the controller
// records: the volume is degraded while a replica is not in sync.
func (l *registryLocator) Health(ctx context.Context, volumeID string) (csi.VolumeHealth, error) {
	resp, err := l.locate(ctx, volumeID)
	if err != nil {
		return csi.VolumeHealth{}, err
	}
	return layoutHealth(resp.GetLayout(), resp.GetSilentNodeIds()), nil
}

func (l *registryLocator) locate(ctx context.Context, volumeID string) (*apiv1.LocateVolumeResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	resp, err := l.client.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: volumeID})
	switch status.Code(err) {
	case codes.OK:
		return resp, nil
	case codes.NotFound, codes.InvalidArgument:
		return nil, fmt.Errorf("locate %s: %w: %s", volumeID, csi.ErrVolumeNotFound, status.Convert(err).Message())
	}
	return nil, fmt.Errorf("locate %s: %w: %w", volumeID, csi.ErrLocatorUnavailable, err)
}

// layoutHealth describes a layout's replicas. An InSync replica whose node
// is in silent (it stopped heartbeating) makes the volume degraded too.
func layoutHealth(l *apiv1.Layout, silent []string) csi.VolumeHealth {
	inSync := 0
	var notes []string
	for _, r := range l.GetReplicas() {
		switch {
		case r.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC:
			notes = append(notes, fmt.Sprintf("%s in %s is %s", r.GetNodeId(), r.GetZone(), stateName(r.GetState())))
		case slices.Contains(silent, r.GetNodeId()):
			inSync++
			notes = append(notes, fmt.Sprintf("%s in %s has stopped heartbeating", r.GetNodeId(), r.GetZone()))
		default:
			inSync++
		}
	}
	msg := fmt.Sprintf("%d of %d replicas in sync, primary %s, epoch %d", inSync, len(l.GetReplicas()), l.GetPrimary(), l.GetEpoch())
	if min := int(l.GetMinInSync()); inSync < min {
		notes = append(notes, fmt.Sprintf("writes wait: fewer than minInSyncReplicas=%d in sync", min))
	}
	if len(notes) > 0 {
		msg += "; " + strings.Join(notes, "; ")
	}
	return csi.VolumeHealth{Degraded: len(notes) > 0, Message: msg}
}

func stateName(s apiv1.ReplicaState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "REPLICA_STATE_"))
}
