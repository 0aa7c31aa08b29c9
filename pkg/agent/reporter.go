package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// reportTimeout bounds one report call; the primary retries after it.
const reportTimeout = 10 * time.Second

// controllerReporter passes a primary's reports to the Controller service
// and hands back the layout the controller persisted.
type controllerReporter struct {
	client  apiv1.ControllerClient
	timeout time.Duration
}

var _ replication.Reporter = (*controllerReporter)(nil)

// ReplicaFaulted reports that nodeID left the write path of volumeID.
func (r *controllerReporter) ReplicaFaulted(ctx context.Context, volumeID string, epoch uint64, nodeID string, cause error) (replication.Layout, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	req := &apiv1.ReportReplicaFaultedRequest{VolumeId: volumeID, Epoch: epoch, NodeId: nodeID}
	if cause != nil {
		req.Cause = cause.Error()
	}
	resp, err := r.client.ReportReplicaFaulted(ctx, req)
	if err != nil {
		return replication.Layout{}, fmt.Errorf("report replica %s of %s faulted at epoch %d: %w", nodeID, volumeID, epoch, err)
	}
	return reportedLayout(volumeID, resp.GetLayout())
}

// ReplicaSynced reports that nodeID finished its copy of volumeID.
func (r *controllerReporter) ReplicaSynced(ctx context.Context, volumeID string, epoch uint64, nodeID string) (replication.Layout, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	req := &apiv1.ReportReplicaSyncedRequest{VolumeId: volumeID, Epoch: epoch, NodeId: nodeID}
	resp, err := r.client.ReportReplicaSynced(ctx, req)
	if err != nil {
		return replication.Layout{}, fmt.Errorf("report replica %s of %s synced at epoch %d: %w", nodeID, volumeID, epoch, err)
	}
	return reportedLayout(volumeID, resp.GetLayout())
}

// reportedLayout checks the controller's answer as strictly as SetLayout
// checks a request.
func reportedLayout(volumeID string, l *apiv1.Layout) (replication.Layout, error) {
	if err := validateLayout(l); err != nil {
		return replication.Layout{}, fmt.Errorf("%w: %w", ErrBadControllerReply, err)
	}
	if l.GetVolumeId() != volumeID {
		return replication.Layout{}, fmt.Errorf("%w: layout of volume %s in reply about %s", ErrBadControllerReply, l.GetVolumeId(), volumeID)
	}
	return api.LayoutFromProto(l), nil
}
