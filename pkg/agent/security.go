package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// Security is what a node agent needs for mutual TLS.
type Security struct {
	// Node is the node's certificate (trireme://node/<id>): its servers
	// present it, and it is the node's client identity towards the
	// controller and the replicas of other nodes. Required.
	Node *certs.Bundle
	// Frontend is the certificate (trireme://frontend/<id>) the CSI
	// frontend opens volumes with on their primaries' NBD servers.
	// Required by StartCSI.
	Frontend *certs.Bundle
}

// nodeBundle returns the node's certificate, nil in insecure mode.
func (a *Agent) nodeBundle() *certs.Bundle {
	if a.cfg.Security == nil {
		return nil
	}
	return a.cfg.Security.Node
}

// replicaDialer connects a primary to its replicas: as the node, to a
// server presenting a node certificate. Nil dials plain TCP.
func (a *Agent) replicaDialer() replication.Dialer {
	b := a.nodeBundle()
	if b == nil {
		return nil
	}
	return &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: replicaDialTimeout},
		Config:    b.ClientConfig(certs.AllowRoles(certs.RoleNode)),
	}
}

// replicaDialTimeout bounds a connection to a replica, handshake
// included.
const replicaDialTimeout = 10 * time.Second

// nbdOptions are the NBD server's: with TLS, forced STARTTLS for
// frontend and operator certificates, and exports authorized by
// certificate (see exportAuthorizer).
func (a *Agent) nbdOptions() nbd.Options {
	o := nbd.Options{HandshakeTimeout: HandshakeTimeout, MaxConnsPerIP: NBDMaxConnsPerIP, MaxNegotiating: NBDMaxNegotiating}
	if b := a.nodeBundle(); b != nil {
		o.TLS = b.ServerConfig(certs.AllowRoles(certs.RoleFrontend, certs.RoleAdmin))
		o.Authorize = newExportAuthorizer(a.publishedNode).authorize
	}
	return o
}

// publishedNode asks the controller where a volume is attached.
func (a *Agent) publishedNode(ctx context.Context, volumeID string) (attachment, error) {
	if a.registry == nil {
		return attachment{}, errors.New("no controller to ask")
	}
	resp, err := a.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: volumeID})
	if err != nil {
		return attachment{}, err
	}
	return attachment{node: resp.GetPublishedNodeId(), generation: resp.GetAttachmentGeneration()}, nil
}

// replicationOptions are the replication server's.
func (a *Agent) replicationOptions() replication.ServerOptions {
	o := replication.ServerOptions{NodeID: a.cfg.NodeID, HelloTimeout: HandshakeTimeout,
		MaxConnsPerIP: ReplicationMaxConnsPerIP, MaxUnbound: ReplicationMaxUnbound}
	if a.nodeBundle() != nil {
		o.Admit = a.admitPrimary
	}
	return o
}

// admitPrimary lets a node write this node's replica of a volume only as
// the primary of the volume's newest layout, and at no epoch above that
// layout's. A node certificate alone would let any node, or a deposed
// primary, write any replica, or raise its epoch so far that the real
// primary is refused (I3). The layout this node last got usually
// answers; a newer one (a failover the controller has not pushed here
// yet) is asked of the controller.
func (a *Agent) admitPrimary(peer, volume string, epoch uint64) error {
	if st, ok := a.state(volume); ok && st.layout != nil && fitsLayout(*st.layout, peer, epoch) {
		return nil
	}
	if a.registry == nil {
		return errors.New("no controller to confirm the primary with")
	}
	ctx, cancel := context.WithTimeout(context.Background(), locateTimeout)
	defer cancel()
	resp, err := a.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: volume})
	if err != nil {
		return fmt.Errorf("cannot confirm the primary with the controller: %w", err)
	}
	l := api.LayoutFromProto(resp.GetLayout())
	if l.VolumeID != volume || !fitsLayout(l, peer, epoch) {
		return fmt.Errorf("the controller's layout at epoch %d names %q primary", l.Epoch, l.Primary)
	}
	return nil
}

// fitsLayout says whether peer writing at epoch is l's primary at l's
// epoch or an older one (which the replica refuses as stale anyway).
func fitsLayout(l replication.Layout, peer string, epoch uint64) bool {
	return l.Primary == peer && epoch <= l.Epoch
}

// frontendTLS is the configuration the CSI frontend connects to primaries
// with, nil in insecure mode.
func (a *Agent) frontendTLS() (*tls.Config, error) {
	switch {
	case a.cfg.Security == nil:
		return nil, nil
	case a.cfg.Security.Frontend == nil:
		return nil, fmt.Errorf("%w: the CSI Node service needs a frontend certificate", ErrInvalidConfig)
	}
	return a.cfg.Security.Frontend.ClientConfig(certs.AllowRoles(certs.RoleNode)), nil
}
