package agent

import (
	"context"
	"errors"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// nodeServer is the RPC edge of the agent: it validates requests, calls
// the agent and turns its errors into gRPC status codes.
type nodeServer struct {
	apiv1.UnimplementedNodeServer
	a *Agent
}

// CreateReplica implements apiv1.NodeServer.
func (s *nodeServer) CreateReplica(_ context.Context, req *apiv1.CreateReplicaRequest) (*apiv1.CreateReplicaResponse, error) {
	if err := validateCreateReplica(req); err != nil {
		return nil, s.fail("CreateReplica", req.GetVolumeId(), err)
	}
	info, err := s.a.createReplica(req.GetVolumeId(), req.GetSizeBytes())
	if err != nil {
		return nil, s.fail("CreateReplica", req.GetVolumeId(), err)
	}
	return &apiv1.CreateReplicaResponse{Volume: volumeToProto(info)}, nil
}

// ExpandReplica implements apiv1.NodeServer.
func (s *nodeServer) ExpandReplica(_ context.Context, req *apiv1.ExpandReplicaRequest) (*apiv1.ExpandReplicaResponse, error) {
	if err := validateSize(req.GetVolumeId(), req.GetSizeBytes()); err != nil {
		return nil, s.fail("ExpandReplica", req.GetVolumeId(), err)
	}
	info, err := s.a.expandReplica(req.GetVolumeId(), req.GetSizeBytes())
	if err != nil {
		return nil, s.fail("ExpandReplica", req.GetVolumeId(), err)
	}
	return &apiv1.ExpandReplicaResponse{Volume: volumeToProto(info)}, nil
}

// DeleteReplica implements apiv1.NodeServer.
func (s *nodeServer) DeleteReplica(_ context.Context, req *apiv1.DeleteReplicaRequest) (*apiv1.DeleteReplicaResponse, error) {
	if err := validateVolumeID("volume_id", req.GetVolumeId()); err != nil {
		return nil, s.fail("DeleteReplica", req.GetVolumeId(), err)
	}
	if err := s.a.deleteReplica(req.GetVolumeId()); err != nil {
		return nil, s.fail("DeleteReplica", req.GetVolumeId(), err)
	}
	return &apiv1.DeleteReplicaResponse{}, nil
}

// SetLayout implements apiv1.NodeServer.
func (s *nodeServer) SetLayout(_ context.Context, req *apiv1.SetLayoutRequest) (*apiv1.SetLayoutResponse, error) {
	if err := validateLayout(req.GetLayout()); err != nil {
		return nil, s.fail("SetLayout", req.GetLayout().GetVolumeId(), err)
	}
	info, err := s.a.setLayout(api.LayoutFromProto(req.GetLayout()))
	if err != nil {
		return nil, s.fail("SetLayout", req.GetLayout().GetVolumeId(), err)
	}
	return &apiv1.SetLayoutResponse{Volume: volumeToProto(info)}, nil
}

// GetVolume implements apiv1.NodeServer.
func (s *nodeServer) GetVolume(_ context.Context, req *apiv1.GetVolumeRequest) (*apiv1.GetVolumeResponse, error) {
	if err := validateVolumeID("volume_id", req.GetVolumeId()); err != nil {
		return nil, s.fail("GetVolume", req.GetVolumeId(), err)
	}
	info, err := s.a.volume(req.GetVolumeId())
	if err != nil {
		return nil, s.fail("GetVolume", req.GetVolumeId(), err)
	}
	return &apiv1.GetVolumeResponse{Volume: volumeToProto(info)}, nil
}

// ListVolumes implements apiv1.NodeServer.
func (s *nodeServer) ListVolumes(context.Context, *apiv1.ListVolumesRequest) (*apiv1.ListVolumesResponse, error) {
	resp := &apiv1.ListVolumesResponse{NodeId: s.a.cfg.NodeID, Zone: s.a.cfg.Zone}
	for _, info := range s.a.volumes() {
		resp.Volumes = append(resp.Volumes, volumeToProto(info))
	}
	return resp, nil
}

// ChecksumReplica implements apiv1.NodeServer.
func (s *nodeServer) ChecksumReplica(ctx context.Context, req *apiv1.ChecksumReplicaRequest) (*apiv1.ChecksumReplicaResponse, error) {
	if err := validateVolumeID("volume_id", req.GetVolumeId()); err != nil {
		return nil, s.fail("ChecksumReplica", req.GetVolumeId(), err)
	}
	sum, n, err := s.a.checksum(ctx, req.GetVolumeId())
	if err != nil {
		return nil, s.fail("ChecksumReplica", req.GetVolumeId(), err)
	}
	return &apiv1.ChecksumReplicaResponse{Sha256: sum, SizeBytes: n}, nil
}

// fail logs err as the operator needs it and returns it as a status.
func (s *nodeServer) fail(method, volume string, err error) error {
	code := codeOf(err)
	switch code {
	case codes.Internal, codes.Unknown:
		klog.ErrorS(err, "Node API call failed", "method", method, "volume", volume, "node", s.a.cfg.NodeID)
	default:
		klog.V(2).InfoS("Node API call refused", "method", method, "volume", volume, "node", s.a.cfg.NodeID, "code", code, "err", err)
	}
	return status.Error(code, err.Error())
}

// codeOf chooses the gRPC status code for an agent error.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, errInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, blockstore.ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrBusy):
		return codes.Aborted
	case errors.Is(err, syscall.EFBIG), errors.Is(err, syscall.ENOSPC), errors.Is(err, blockstore.ErrShrink):
		return codes.OutOfRange
	case errors.Is(err, ErrShuttingDown):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case isPreconditionError(err):
		return codes.FailedPrecondition
	}
	return codes.Internal
}

// isPreconditionError says whether err means the request does not fit
// the node's state, so that retrying it unchanged cannot succeed.
func isPreconditionError(err error) bool {
	for _, target := range []error{ErrNoLocalReplica, ErrStaleLayout,
		ErrLayoutConflict, replication.ErrInvalidLayout, replication.ErrDeposed,
		blockstore.ErrStaleEpoch, replication.ErrIncomplete} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func volumeToProto(info volumeInfo) *apiv1.Volume {
	v := &apiv1.Volume{
		VolumeId:   info.meta.VolumeID,
		SizeBytes:  info.meta.Size,
		Epoch:      info.meta.Epoch,
		Rebuilding: info.meta.Rebuilding,
		Role:       apiv1.Role_ROLE_REPLICA,
	}
	if info.primary {
		v.Role = apiv1.Role_ROLE_PRIMARY
	}
	if info.layout != nil {
		v.Layout = api.LayoutToProto(*info.layout)
	}
	for _, r := range info.replicas {
		v.Replicas = append(v.Replicas, api.ReplicaStatusToProto(r))
	}
	return v
}
