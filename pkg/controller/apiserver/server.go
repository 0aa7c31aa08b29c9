// Package apiserver is the RPC edge of the controller's internal API: the
// Registry service node agents register, heartbeat and locate volumes
// with, and the
// Controller service primaries report replica faults and completed copies
// to. It validates requests, calls package controller, and turns its
// errors into gRPC status codes.
package apiserver

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// Server serves the Registry and Controller services for a controller.
type Server struct {
	apiv1.UnimplementedRegistryServer
	apiv1.UnimplementedControllerServer
	c *controller.Controller
}

// New returns a Server for c.
func New(c *controller.Controller) *Server { return &Server{c: c} }

// Register adds both services to s.
func (srv *Server) Register(s *grpc.Server) {
	apiv1.RegisterRegistryServer(s, srv)
	apiv1.RegisterControllerServer(s, srv)
}

// RegisterNode implements apiv1.RegistryServer.
func (srv *Server) RegisterNode(ctx context.Context, req *apiv1.RegisterNodeRequest) (*apiv1.RegisterNodeResponse, error) {
	err := srv.c.RegisterNode(ctx, controller.Registration{
		NodeID: req.GetNodeId(), Zone: req.GetZone(), Topology: req.GetTopology(),
		DataAddress: req.GetDataAddress(), APIAddress: req.GetApiAddress(), NBDAddress: req.GetNbdAddress(),
		CapacityBytes: req.GetCapacityBytes(), FreeBytes: req.GetFreeBytes(),
	})
	if err != nil {
		return nil, fail("RegisterNode", "", req.GetNodeId(), err)
	}
	return &apiv1.RegisterNodeResponse{}, nil
}

// Heartbeat implements apiv1.RegistryServer.
func (srv *Server) Heartbeat(_ context.Context, req *apiv1.HeartbeatRequest) (*apiv1.HeartbeatResponse, error) {
	if err := srv.c.Heartbeat(req.GetNodeId(), req.GetFreeBytes()); err != nil {
		return nil, fail("Heartbeat", "", req.GetNodeId(), err)
	}
	return &apiv1.HeartbeatResponse{}, nil
}

// LocateVolume implements apiv1.RegistryServer.
func (srv *Server) LocateVolume(ctx context.Context, req *apiv1.LocateVolumeRequest) (*apiv1.LocateVolumeResponse, error) {
	if err := api.ValidateVolumeID(req.GetVolumeId()); err != nil {
		return nil, fail("LocateVolume", req.GetVolumeId(), "", errors.Join(controller.ErrInvalid, err))
	}
	loc, err := srv.c.LocateVolume(ctx, req.GetVolumeId())
	if err != nil {
		return nil, fail("LocateVolume", req.GetVolumeId(), "", err)
	}
	v := loc.Volume
	return &apiv1.LocateVolumeResponse{
		Layout:               api.LayoutToProto(v.Layout),
		PrimaryNbdAddress:    loc.PrimaryNBDAddress,
		PublishedNodeId:      v.Attachment.NodeID,
		AttachmentGeneration: v.Attachment.Generation,
		SilentNodeIds:        srv.silentNodes(v.Layout),
	}, nil
}

// silentNodes lists the nodes of InSync replicas that stopped
// heartbeating.
func (srv *Server) silentNodes(l replication.Layout) []string {
	var out []string
	for _, r := range l.Replicas {
		if r.State == replication.InSync && srv.c.KnownDead(r.NodeID) {
			out = append(out, r.NodeID)
		}
	}
	return out
}

// ReportReplicaFaulted implements apiv1.ControllerServer.
func (srv *Server) ReportReplicaFaulted(ctx context.Context, req *apiv1.ReportReplicaFaultedRequest) (*apiv1.ReportReplicaFaultedResponse, error) {
	if err := validateReport(req.GetVolumeId(), req.GetNodeId()); err != nil {
		return nil, fail("ReportReplicaFaulted", req.GetVolumeId(), req.GetNodeId(), err)
	}
	l, err := srv.c.ReplicaFaulted(ctx, req.GetVolumeId(), req.GetEpoch(), req.GetNodeId(), req.GetCause())
	if err != nil {
		return nil, fail("ReportReplicaFaulted", req.GetVolumeId(), req.GetNodeId(), err)
	}
	return &apiv1.ReportReplicaFaultedResponse{Layout: api.LayoutToProto(l)}, nil
}

// ReportReplicaSynced implements apiv1.ControllerServer.
func (srv *Server) ReportReplicaSynced(ctx context.Context, req *apiv1.ReportReplicaSyncedRequest) (*apiv1.ReportReplicaSyncedResponse, error) {
	if err := validateReport(req.GetVolumeId(), req.GetNodeId()); err != nil {
		return nil, fail("ReportReplicaSynced", req.GetVolumeId(), req.GetNodeId(), err)
	}
	l, err := srv.c.ReplicaSynced(ctx, req.GetVolumeId(), req.GetEpoch(), req.GetNodeId())
	if err != nil {
		return nil, fail("ReportReplicaSynced", req.GetVolumeId(), req.GetNodeId(), err)
	}
	return &apiv1.ReportReplicaSyncedResponse{Layout: api.LayoutToProto(l)}, nil
}

func validateReport(volumeID, nodeID string) error {
	if err := api.ValidateVolumeID(volumeID); err != nil {
		return errors.Join(controller.ErrInvalid, err)
	}
	if nodeID == "" {
		return errors.Join(controller.ErrInvalid, errors.New("node_id is required"))
	}
	return nil
}

// fail logs err and returns it as a status.
func fail(method, volume, node string, err error) error {
	code := codeOf(err)
	if code == codes.Internal || code == codes.Unknown {
		klog.ErrorS(err, "Controller API call failed", "method", method, "volume", volume, "node", node)
	} else {
		klog.V(2).InfoS("Controller API call refused", "method", method, "volume", volume, "node", node, "code", code, "err", err)
	}
	return status.Error(code, err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, controller.ErrInvalid), errors.Is(err, store.ErrInvalid),
		errors.Is(err, controller.ErrInvalidReport):
		return codes.InvalidArgument
	case errors.Is(err, controller.ErrVolumeNotFound), errors.Is(err, controller.ErrNodeNotFound):
		return codes.NotFound
	case errors.Is(err, controller.ErrEpochAhead), errors.Is(err, controller.ErrAddressInUse):
		return codes.FailedPrecondition
	case errors.Is(err, controller.ErrNodeUnavailable):
		return codes.Unavailable
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Internal
}
