package agent

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// testRegistry records registrations and heartbeats; it forgets the node
// once, as a restarted controller would.
type testRegistry struct {
	apiv1.UnimplementedRegistryServer
	registered chan *apiv1.RegisterNodeRequest
	beats      chan *apiv1.HeartbeatRequest
	forget     chan struct{}
	fail       chan struct{}
}

func (r *testRegistry) RegisterNode(_ context.Context, req *apiv1.RegisterNodeRequest) (*apiv1.RegisterNodeResponse, error) {
	select {
	case r.registered <- req:
	default:
	}
	return &apiv1.RegisterNodeResponse{}, nil
}

func (r *testRegistry) Heartbeat(_ context.Context, req *apiv1.HeartbeatRequest) (*apiv1.HeartbeatResponse, error) {
	select {
	case <-r.forget:
		return nil, status.Error(codes.NotFound, "unknown node")
	case <-r.fail:
		return nil, status.Error(codes.Unavailable, "controller unreachable")
	default:
	}
	select {
	case r.beats <- req:
	default: // the test has seen enough
	}
	return &apiv1.HeartbeatResponse{}, nil
}

func TestAgentRegistersAndHeartbeats(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := &testRegistry{registered: make(chan *apiv1.RegisterNodeRequest, 8),
		beats: make(chan *apiv1.HeartbeatRequest, 64), forget: make(chan struct{}, 1), fail: make(chan struct{}, 1)}
	s := grpc.NewServer()
	apiv1.RegisterRegistryServer(s, reg)
	go s.Serve(l)
	t.Cleanup(s.Stop)

	a, err := New(Config{NodeID: "n1", Zone: "zone-a", DataDir: t.TempDir(), ListenAddress: "127.0.0.1",
		ControllerAddress: l.Addr().String(), CapacityBytes: 1 << 30, HeartbeatInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, 5*time.Second) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	first := receive(t, reg.registered)
	ep := a.Endpoints()
	if first.GetNodeId() != "n1" || first.GetZone() != "zone-a" || first.GetTopology()[api.ZoneTopologyKey] != "zone-a" ||
		first.GetDataAddress() != ep.Replication || first.GetApiAddress() != ep.API || first.GetNbdAddress() != ep.NBD ||
		first.GetCapacityBytes() != 1<<30 || first.GetFreeBytes() != 1<<30 {
		t.Errorf("registration %v, endpoints %+v", first, ep)
	}
	if hb := receive(t, reg.beats); hb.GetNodeId() != "n1" || hb.GetFreeBytes() != 1<<30 {
		t.Errorf("heartbeat %v", hb)
	}

	reg.forget <- struct{}{}
	if again := receive(t, reg.registered); again.GetNodeId() != "n1" {
		t.Errorf("re-registration %v", again)
	}
	// A controller that could not be reached registers the node again
	// once it answers, and so sends it its layouts again.
	reg.fail <- struct{}{}
	if again := receive(t, reg.registered); again.GetNodeId() != "n1" {
		t.Errorf("registration after an unanswered heartbeat %v", again)
	}
}

func receive[T any](t *testing.T, c chan T) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received")
		panic("unreachable")
	}
}
