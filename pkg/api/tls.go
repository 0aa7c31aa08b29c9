package api

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/trireme-csi/trireme/pkg/certs"
)

// ClientCredentials returns the dial option of a client that presents
// b's certificate and accepts a server of the cluster CA whose identity
// allow admits. A nil b dials plain TCP, the insecure mode.
func ClientCredentials(b *certs.Bundle, allow func(certs.Peer) error) grpc.DialOption {
	if b == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(b.ClientConfig(allow)))
}

// ServerCredentials returns the server option of a gRPC server that
// presents b's certificate and requires a client certificate of the
// cluster CA whose identity allow admits. A nil b serves plain TCP.
func ServerCredentials(b *certs.Bundle, allow func(certs.Peer) error) grpc.ServerOption {
	if b == nil {
		return grpc.Creds(insecure.NewCredentials())
	}
	return grpc.Creds(credentials.NewTLS(b.ServerConfig(allow)))
}
