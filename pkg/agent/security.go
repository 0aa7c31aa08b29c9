package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

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

// publishedNode asks the controller which node a volume is attached to.
func (a *Agent) publishedNode(ctx context.Context, volumeID string) (string, error) {
	if a.registry == nil {
		return "", errors.New("no controller to ask")
	}
	resp, err := a.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: volumeID})
	if err != nil {
		return "", err
	}
	return resp.GetPublishedNodeId(), nil
}

// replicationOptions are the replication server's.
func (a *Agent) replicationOptions() replication.ServerOptions {
	return replication.ServerOptions{NodeID: a.cfg.NodeID, HelloTimeout: HandshakeTimeout,
		MaxConnsPerIP: ReplicationMaxConnsPerIP, MaxUnbound: ReplicationMaxUnbound}
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
