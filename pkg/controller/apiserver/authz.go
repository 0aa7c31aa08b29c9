package apiserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/store"
)

// PrimaryOf returns the node a volume's record names as its primary.
type PrimaryOf func(ctx context.Context, volumeID string) (string, error)

// Rules returns who may call what on the controller's API, by client
// certificate:
//   - RegisterNode and Heartbeat: a node, for itself only;
//   - ReportReplicaFaulted and ReportReplicaSynced: a node, only about a
//     volume whose record names it primary, since only a primary can tell
//     and these change the record;
//   - LocateVolume: a node (its frontend locates primaries) or an
//     operator.
//
// A method with no rule is refused.
func Rules(primaryOf PrimaryOf) api.Rules {
	return api.Rules{
		apiv1.Registry_RegisterNode_FullMethodName: selfNode(func(req any) string {
			return req.(*apiv1.RegisterNodeRequest).GetNodeId()
		}),
		apiv1.Registry_Heartbeat_FullMethodName: selfNode(func(req any) string {
			return req.(*apiv1.HeartbeatRequest).GetNodeId()
		}),
		apiv1.Registry_LocateVolume_FullMethodName: api.AllowRoles(certs.RoleNode, certs.RoleAdmin),
		apiv1.Controller_ReportReplicaFaulted_FullMethodName: primaryNode(primaryOf, func(req any) string {
			return req.(*apiv1.ReportReplicaFaultedRequest).GetVolumeId()
		}),
		apiv1.Controller_ReportReplicaSynced_FullMethodName: primaryNode(primaryOf, func(req any) string {
			return req.(*apiv1.ReportReplicaSyncedRequest).GetVolumeId()
		}),
	}
}

// Rules returns the rules of srv's controller.
func (srv *Server) Rules() api.Rules {
	return Rules(func(ctx context.Context, id string) (string, error) {
		v, err := srv.c.GetVolume(ctx, id)
		if err != nil {
			return "", err
		}
		return v.Layout.Primary, nil
	})
}

// selfNode admits a node calling about itself: the node id of the
// request must be the name in its certificate.
func selfNode(nodeID func(req any) string) api.Rule {
	return func(_ context.Context, caller certs.Peer, req any) error {
		if caller.Role != certs.RoleNode {
			return fmt.Errorf("%w: only a node agent registers and heartbeats, not %s", api.ErrDenied, caller)
		}
		if id := nodeID(req); id != caller.Name {
			return fmt.Errorf("%w: %s may not speak for node %q", api.ErrDenied, caller, id)
		}
		return nil
	}
}

// primaryNode admits the node the volume's record names primary.
func primaryNode(primaryOf PrimaryOf, volumeID func(req any) string) api.Rule {
	return func(ctx context.Context, caller certs.Peer, req any) error {
		if caller.Role != certs.RoleNode {
			return fmt.Errorf("%w: only a volume's primary reports on its replicas, not %s", api.ErrDenied, caller)
		}
		id := volumeID(req)
		primary, err := primaryOf(ctx, id)
		switch {
		case errors.Is(err, controller.ErrVolumeNotFound), errors.Is(err, controller.ErrInvalid),
			errors.Is(err, store.ErrInvalid):
			return fmt.Errorf("%w: %s reports on volume %q: %w", api.ErrDenied, caller, id, err)
		case err != nil:
			return err
		case primary != caller.Name:
			return fmt.Errorf("%w: %s is not the primary of volume %s (%s is)", api.ErrDenied, caller, id, primary)
		}
		return nil
	}
}
