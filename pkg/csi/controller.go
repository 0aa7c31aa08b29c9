package csi

import (
	"context"
	"fmt"
	"strconv"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/store"
)

// Keys of the contexts the Controller service returns.
const (
	// ContextFSType carries the StorageClass fsType to the node service,
	// for mount volumes whose capability names no filesystem.
	ContextFSType = "fsType"
	// PublishGeneration carries the attachment generation that
	// ControllerPublishVolume recorded (invariant I3).
	PublishGeneration = "trireme.dev/generation"
)

// ControllerServer serves the CSI Controller service.
//
// The volumes it creates carry no accessible_topology: every node reaches
// every volume over the network, and a list of zones would keep pods out
// of zones that join the cluster later.
type ControllerServer struct {
	csipb.UnimplementedControllerServer
	c        *controller.Controller
	inflight *inflight
}

// NewControllerServer returns the Controller service of c.
func NewControllerServer(c *controller.Controller) *ControllerServer {
	return &ControllerServer{c: c, inflight: newInflight()}
}

// controllerCaps are the capabilities advertised: each one works.
var controllerCaps = []csipb.ControllerServiceCapability_RPC_Type{
	csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csipb.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csipb.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
	csipb.ControllerServiceCapability_RPC_GET_CAPACITY,
	csipb.ControllerServiceCapability_RPC_GET_VOLUME,
	csipb.ControllerServiceCapability_RPC_VOLUME_CONDITION,
	csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME,
}

// ControllerGetCapabilities implements csipb.ControllerServer.
func (s *ControllerServer) ControllerGetCapabilities(context.Context, *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	resp := &csipb.ControllerGetCapabilitiesResponse{}
	for _, t := range controllerCaps {
		resp.Capabilities = append(resp.Capabilities, &csipb.ControllerServiceCapability{
			Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

// CreateVolume implements csipb.ControllerServer.
func (s *ControllerServer) CreateVolume(ctx context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	vr, params, err := validateCreateVolume(req)
	if err != nil {
		return nil, err
	}
	release, err := s.inflight.begin("volume name " + strconv.Quote(req.GetName()))
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := s.c.CreateVolume(ctx, vr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &csipb.CreateVolumeResponse{Volume: volumeToCSI(v, params)}, nil
}

// DeleteVolume implements csipb.ControllerServer.
func (s *ControllerServer) DeleteVolume(ctx context.Context, req *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := validateVolumeID(id); err != nil {
		return nil, err
	}
	if !wellFormedID(id) {
		return &csipb.DeleteVolumeResponse{}, nil // names no volume
	}
	release, err := s.inflight.begin("volume " + id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.c.DeleteVolume(ctx, id); err != nil {
		return nil, toStatus(err)
	}
	return &csipb.DeleteVolumeResponse{}, nil
}

// ControllerPublishVolume implements csipb.ControllerServer.
func (s *ControllerServer) ControllerPublishVolume(ctx context.Context, req *csipb.ControllerPublishVolumeRequest) (*csipb.ControllerPublishVolumeResponse, error) {
	if err := validatePublish(req); err != nil {
		return nil, err
	}
	id := req.GetVolumeId()
	if !wellFormedID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	release, err := s.inflight.begin("volume " + id)
	if err != nil {
		return nil, err
	}
	defer release()
	v, err := s.c.Publish(ctx, id, req.GetNodeId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &csipb.ControllerPublishVolumeResponse{PublishContext: map[string]string{
		PublishGeneration: strconv.FormatUint(v.Attachment.Generation, 10),
	}}, nil
}

// ControllerUnpublishVolume implements csipb.ControllerServer.
func (s *ControllerServer) ControllerUnpublishVolume(ctx context.Context, req *csipb.ControllerUnpublishVolumeRequest) (*csipb.ControllerUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := validateVolumeID(id); err != nil {
		return nil, err
	}
	if !wellFormedID(id) {
		return &csipb.ControllerUnpublishVolumeResponse{}, nil
	}
	release, err := s.inflight.begin("volume " + id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.c.Unpublish(ctx, id, req.GetNodeId()); err != nil {
		return nil, toStatus(err)
	}
	return &csipb.ControllerUnpublishVolumeResponse{}, nil
}

// ValidateVolumeCapabilities implements csipb.ControllerServer. It
// confirms the capabilities when every one is supported.
func (s *ControllerServer) ValidateVolumeCapabilities(ctx context.Context, req *csipb.ValidateVolumeCapabilitiesRequest) (*csipb.ValidateVolumeCapabilitiesResponse, error) {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities: required")
	}
	v, err := s.volume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	if _, err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csipb.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	if msg := mismatch(v, req.GetVolumeCapabilities(), req.GetParameters()); msg != "" {
		return &csipb.ValidateVolumeCapabilitiesResponse{Message: msg}, nil
	}
	return &csipb.ValidateVolumeCapabilitiesResponse{Confirmed: &csipb.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ListVolumes implements csipb.ControllerServer. The token is the id of
// the last volume of the previous page.
func (s *ControllerServer) ListVolumes(ctx context.Context, req *csipb.ListVolumesRequest) (*csipb.ListVolumesResponse, error) {
	if err := validateMaxEntries(req.GetMaxEntries()); err != nil {
		return nil, err
	}
	start, err := parseStartingToken(req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	page, err := s.c.ListVolumes(ctx, store.ListOptions{StartAfter: start, Limit: int(req.GetMaxEntries())})
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &csipb.ListVolumesResponse{NextToken: page.Next}
	for _, v := range page.Volumes {
		resp.Entries = append(resp.Entries, &csipb.ListVolumesResponse_Entry{
			Volume: volumeToCSI(v, storedParams(v)),
			Status: &csipb.ListVolumesResponse_VolumeStatus{PublishedNodeIds: publishedNodes(v), VolumeCondition: replicaCondition(v, s.c.KnownDead)},
		})
	}
	return resp, nil
}

// ControllerGetVolume implements csipb.ControllerServer.
func (s *ControllerServer) ControllerGetVolume(ctx context.Context, req *csipb.ControllerGetVolumeRequest) (*csipb.ControllerGetVolumeResponse, error) {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return nil, err
	}
	v, err := s.volume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	return &csipb.ControllerGetVolumeResponse{
		Volume: volumeToCSI(v, storedParams(v)),
		Status: &csipb.ControllerGetVolumeResponse_VolumeStatus{PublishedNodeIds: publishedNodes(v), VolumeCondition: replicaCondition(v, s.c.KnownDead)},
	}, nil
}

// GetCapacity implements csipb.ControllerServer: the free bytes of the
// live nodes in the segment (every node without one). Capabilities the
// driver does not support have no capacity.
//
// The figure is raw space: a volume of R replicas takes R times its size,
// spread over R nodes, so it does not say that one volume of that size
// fits. maximum_volume_size is not reported yet.
func (s *ControllerServer) GetCapacity(_ context.Context, req *csipb.GetCapacityRequest) (*csipb.GetCapacityResponse, error) {
	if _, err := parseParameters(req.GetParameters()); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) > 0 {
		if _, err := validateCapabilities(req.GetVolumeCapabilities()); err != nil {
			return &csipb.GetCapacityResponse{}, nil
		}
	}
	return &csipb.GetCapacityResponse{AvailableCapacity: s.c.Capacity(req.GetAccessibleTopology().GetSegments())}, nil
}

// volume returns the record of id, or NOT_FOUND.
func (s *ControllerServer) volume(ctx context.Context, id string) (store.Volume, error) {
	if !wellFormedID(id) {
		return store.Volume{}, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	v, err := s.c.GetVolume(ctx, id)
	if err != nil {
		return store.Volume{}, toStatus(err)
	}
	return v, nil
}

func volumeToCSI(v store.Volume, p volumeParams) *csipb.Volume {
	return &csipb.Volume{
		VolumeId:      v.ID,
		CapacityBytes: v.Size,
		VolumeContext: map[string]string{ContextFSType: p.fsType},
	}
}

// storedParams are the parameters of an existing volume; they passed
// validation when it was created.
func storedParams(v store.Volume) volumeParams {
	p, err := parseParameters(v.Parameters)
	if err != nil {
		return volumeParams{fsType: DefaultFSType}
	}
	return p
}

// mismatch says how the capabilities or parameters asked about differ from
// what the volume was created with, or "" when they fit it.
func mismatch(v store.Volume, caps []*csipb.VolumeCapability, params map[string]string) string {
	have := storedParams(v)
	for _, c := range caps {
		if fs := c.GetMount().GetFsType(); fs != "" && fs != have.fsType {
			return fmt.Sprintf("volume is formatted %s, not %s", have.fsType, fs)
		}
	}
	if len(params) == 0 {
		return ""
	}
	want, err := parseParameters(params)
	if err != nil {
		return status.Convert(err).Message()
	}
	if want.replicas != have.replicas || want.minInSync != have.minInSync ||
		want.topologyKey != have.topologyKey || want.fsType != have.fsType {
		return fmt.Sprintf("volume has replicas=%d minInSyncReplicas=%d topologyKey=%s fsType=%s",
			have.replicas, have.minInSync, have.topologyKey, have.fsType)
	}
	return ""
}

func publishedNodes(v store.Volume) []string {
	if !v.Attachment.Attached() {
		return nil
	}
	return []string{v.Attachment.NodeID}
}

// replicaCondition is abnormal while fewer replicas than the layout holds are
// InSync, or while an InSync replica's node has stopped heartbeating: the
// volume runs with fewer copies than asked for, or, when that node is the
// primary, cannot be served until failover.
func replicaCondition(v store.Volume, dead func(nodeID string) bool) *csipb.VolumeCondition {
	in, all := controller.InSyncCount(v.Layout), len(v.Layout.Replicas)
	abnormal := in < all
	msg := fmt.Sprintf("%d of %d replicas in sync, epoch %d, primary %s", in, all, v.Layout.Epoch, v.Layout.Primary)
	if in < v.MinInSyncReplicas {
		msg += fmt.Sprintf("; writes wait: fewer than minInSyncReplicas=%d in sync", v.MinInSyncReplicas)
	}
	for _, r := range v.Layout.Replicas {
		switch {
		case string(r.State) != "InSync":
			msg += fmt.Sprintf("; %s in %s is %s", r.NodeID, r.Zone, r.State)
		case dead(r.NodeID):
			abnormal = true
			msg += fmt.Sprintf("; node %s in %s has stopped heartbeating", r.NodeID, r.Zone)
		}
	}
	return &csipb.VolumeCondition{Abnormal: abnormal, Message: msg}
}
