package api

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// NodeClient calls a node agent's Node service.
type NodeClient struct {
	apiv1.NodeClient
	conn *grpc.ClientConn
}

// DialNode returns a client of the Node service at addr (host:port). The
// connection is made lazily, on the first call.
func DialNode(addr string, opts ...grpc.DialOption) (*NodeClient, error) {
	conn, err := dial(addr, opts)
	if err != nil {
		return nil, err
	}
	return &NodeClient{NodeClient: apiv1.NewNodeClient(conn), conn: conn}, nil
}

// Close releases the connection.
func (c *NodeClient) Close() error { return c.conn.Close() }

// ControllerClient calls the controller's Controller service.
type ControllerClient struct {
	apiv1.ControllerClient
	conn *grpc.ClientConn
}

// DialController returns a client of the Controller service at addr
// (host:port). The connection is made lazily, on the first call.
func DialController(addr string, opts ...grpc.DialOption) (*ControllerClient, error) {
	conn, err := dial(addr, opts)
	if err != nil {
		return nil, err
	}
	return &ControllerClient{ControllerClient: apiv1.NewControllerClient(conn), conn: conn}, nil
}

// Close releases the connection.
func (c *ControllerClient) Close() error { return c.conn.Close() }

// dial makes a plain-TCP client connection; opts come after the default
// credentials, so a caller can replace them.
func dial(addr string, opts []grpc.DialOption) (*grpc.ClientConn, error) {
	all := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	conn, err := grpc.NewClient("passthrough:///"+addr, all...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// RegistryClient calls the controller's Registry service.
type RegistryClient struct {
	apiv1.RegistryClient
	conn *grpc.ClientConn
}

// DialRegistry returns a client of the Registry service at addr
// (host:port). The connection is made lazily, on the first call.
func DialRegistry(addr string, opts ...grpc.DialOption) (*RegistryClient, error) {
	conn, err := dial(addr, opts)
	if err != nil {
		return nil, err
	}
	return &RegistryClient{RegistryClient: apiv1.NewRegistryClient(conn), conn: conn}, nil
}

// Close releases the connection.
func (c *RegistryClient) Close() error { return c.conn.Close() }
