package api

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Limits of the internal gRPC servers (the controller's API and the Node
// API). Their messages are small: a volume list of a few thousand
// volumes fits MaxRecvMsgSize many times over.
const (
	// MaxRecvMsgSize bounds one request message.
	MaxRecvMsgSize = 4 << 20
	// MaxConcurrentStreams bounds the calls one connection has open.
	MaxConcurrentStreams = 64
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface of a
	// new connection, so that a silent client cannot hold one open.
	HandshakeTimeout = 10 * time.Second
	// KeepaliveMinTime is the shortest keepalive ping interval a client
	// may use; a client that pings more often is disconnected.
	KeepaliveMinTime = 5 * time.Second
	// MaxConnectionIdle closes a connection with no call for this long.
	MaxConnectionIdle = 15 * time.Minute
	// MaxConnsPerIP bounds the connections of one client address (see
	// netlimit.Listener): a node agent holds two to the controller, the
	// controller one to each node.
	MaxConnsPerIP = 256
)

// Limits returns the server options that bound what one client can make
// a server hold.
func Limits() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: MaxConnectionIdle,
			Time:              time.Minute,
			Timeout:           20 * time.Second,
		}),
	}
}
