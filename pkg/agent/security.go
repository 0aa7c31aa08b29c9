package agent

import (
	"github.com/trireme-csi/trireme/pkg/certs"
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
