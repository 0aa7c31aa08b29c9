package main

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/internal/testcerts"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// TestNodeDialerReachesOnlyTheNodeItMeans: the controller's Node API
// client accepts only the certificate of the node it dials, so a node
// that registered another node's API address gets none of its calls sent
// there.
func TestNodeDialerReachesOnlyTheNodeItMeans(t *testing.T) {
	ca := testcerts.CA(t)
	nodeB := testcerts.Bundle(t, ca, certs.Peer{Role: certs.RoleNode, Name: "node-b"})
	srv := grpc.NewServer(api.ServerCredentials(nodeB, certs.AllowRoles(certs.RoleController)))
	apiv1.RegisterNodeServer(srv, apiv1.UnimplementedNodeServer{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	dial := nodeDialer(testcerts.Bundle(t, ca, certs.Peer{Role: certs.RoleController}))
	call := func(nodeID string) error {
		cl, err := dial(nodeID, lis.Addr().String())
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = cl.ListVolumes(ctx, &apiv1.ListVolumesRequest{})
		return err
	}
	// The server answers Unimplemented once the call reaches it.
	if err := call("node-b"); status.Code(err) != codes.Unimplemented {
		t.Fatalf("calling node-b at its own address: %v, want the call to reach it (Unimplemented)", err)
	}
	if err := call("node-a"); status.Code(err) != codes.Unavailable {
		t.Errorf("calling node-a at node-b's address: %v, want Unavailable (handshake refused)", err)
	}
}
