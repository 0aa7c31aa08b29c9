package agent

import "time"

// Connection limits of the node agent's servers. They bound what a
// client that holds connections open, or opens many, can take from
// legitimate ones; the gRPC API also has the message and stream limits
// of api.Limits.
const (
	// HandshakeTimeout bounds how long a new NBD or replication
	// connection may take to negotiate (TLS handshake included) before
	// it is closed.
	HandshakeTimeout = 10 * time.Second
	// NBDMaxConnsPerIP bounds the NBD connections of one client address:
	// a frontend holds one or two per attached volume.
	NBDMaxConnsPerIP = 256
	// NBDMaxNegotiating bounds the NBD connections negotiating at once;
	// past it the one silent longest is closed.
	NBDMaxNegotiating = 64
	// ReplicationMaxConnsPerIP bounds the replication connections of one
	// peer address: a primary holds one per volume it replicates here.
	ReplicationMaxConnsPerIP = 4096
	// ReplicationMaxUnbound bounds the replication connections that have
	// not bound to a volume yet; past it the oldest is closed.
	ReplicationMaxUnbound = 128
)
