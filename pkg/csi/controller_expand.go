package csi

import (
	"context"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ControllerExpandVolume implements csipb.ControllerServer. Volumes grow
// online, published or not: every replica grows, then the primary serves
// the new size. The node then grows its device and filesystem
// (NodeExpandVolume), so node_expansion_required is always true; a node
// that stages the volume later sees the new size at once.
//
// A volume already at least as large as required_bytes is returned as it
// is. Volumes never shrink.
func (s *ControllerServer) ControllerExpandVolume(ctx context.Context, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := validateVolumeID(id); err != nil {
		return nil, err
	}
	r := req.GetCapacityRange()
	if r == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity_range: required")
	}
	if r.GetRequiredBytes() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d, want the new size", r.GetRequiredBytes())
	}
	size, err := volumeSize(r)
	if err != nil {
		return nil, err
	}
	if vc := req.GetVolumeCapability(); vc != nil {
		if _, err := validateCapabilities([]*csipb.VolumeCapability{vc}); err != nil {
			return nil, err
		}
	}
	if !wellFormedID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	release, err := s.inflight.begin("volume " + id)
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := s.c.ExpandVolume(ctx, id, size)
	if err != nil {
		return nil, toStatus(err)
	}
	if limit := r.GetLimitBytes(); limit > 0 && v.Size > limit {
		return nil, status.Errorf(codes.OutOfRange, "volume %s holds %d bytes already, above limit_bytes %d", id, v.Size, limit)
	}
	return &csipb.ControllerExpandVolumeResponse{CapacityBytes: v.Size, NodeExpansionRequired: true}, nil
}
