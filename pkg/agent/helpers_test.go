package agent

import (
	"github.com/trireme-csi/trireme/internal/testenv"

	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

const (
	mib         = 1 << 20
	testSize    = 4 * mib
	callTimeout = 10 * time.Second
)

// testAgent is an agent running in the test process.
type testAgent struct {
	id     string
	agent  *Agent
	client *api.NodeClient
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startAgent runs an agent for node id on ip with ephemeral ports. It is
// stopped at the end of the test.
func startAgent(t *testing.T, id, ip, dataDir, controller string) *testAgent {
	t.Helper()
	a, err := New(Config{
		NodeID: id, Zone: "zone-" + id, DataDir: dataDir, ListenAddress: ip,
		ControllerAddress: controller, AckTimeout: time.Second,
	})
	if err != nil {
		t.Fatalf("New(%s): %v", id, err)
	}
	c, err := api.DialNode(a.Endpoints().API)
	if err != nil {
		t.Fatalf("DialNode: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{id: id, agent: a, client: c, cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx, 5*time.Second) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

// stop shuts the agent down and waits for it, as a killed node would
// vanish from its peers' point of view: its connections close.
func (ta *testAgent) stop(t *testing.T) {
	t.Helper()
	ta.once.Do(func() {
		ta.cancel()
		if err := <-ta.done; err != nil {
			t.Errorf("agent %s: Run: %v", ta.id, err)
		}
		ta.client.Close()
	})
}

func (ta *testAgent) replicaInfo() *apiv1.ReplicaInfo {
	return &apiv1.ReplicaInfo{
		NodeId: ta.id, Zone: "zone-" + ta.id, Address: ta.agent.Endpoints().Replication,
		State: apiv1.ReplicaState_REPLICA_STATE_IN_SYNC,
	}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails the test unless err carries code.
func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("got code %v (%v), want %v", got, err, code)
	}
}

// layoutOf builds a layout of volume id with every agent InSync.
func layoutOf(id string, epoch uint64, primary *testAgent, agents ...*testAgent) *apiv1.Layout {
	l := &apiv1.Layout{VolumeId: id, SizeBytes: testSize, Epoch: epoch, Primary: primary.id}
	for _, a := range agents {
		l.Replicas = append(l.Replicas, a.replicaInfo())
	}
	return l
}

func createReplica(t *testing.T, a *testAgent, id string, size int64) {
	t.Helper()
	_, err := a.client.CreateReplica(callCtx(t), &apiv1.CreateReplicaRequest{VolumeId: id, SizeBytes: size})
	if err != nil {
		t.Fatalf("CreateReplica(%s) on %s: %v", id, a.id, err)
	}
}

func setLayout(t *testing.T, a *testAgent, l *apiv1.Layout) *apiv1.Volume {
	t.Helper()
	resp, err := a.client.SetLayout(callCtx(t), &apiv1.SetLayoutRequest{Layout: l})
	if err != nil {
		t.Fatalf("SetLayout(epoch %d) on %s: %v", l.GetEpoch(), a.id, err)
	}
	return resp.GetVolume()
}

func checksum(t *testing.T, a *testAgent, id string) string {
	t.Helper()
	resp, err := a.client.ChecksumReplica(callCtx(t), &apiv1.ChecksumReplicaRequest{VolumeId: id})
	if err != nil {
		t.Fatalf("ChecksumReplica(%s) on %s: %v", id, a.id, err)
	}
	return resp.GetSha256()
}

// image is the expected content of a volume: size bytes, with the given
// fills applied in order.
func image(size int, fills ...fill) string {
	b := make([]byte, size)
	for _, f := range fills {
		copy(b[f.off:f.off+f.n], bytes.Repeat([]byte{f.pattern}, f.n))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

type fill struct {
	pattern byte
	off, n  int
}

// requireQemuIO skips the test without qemu-io, or fails it under CI,
// where a missing tool is a broken environment.
func requireQemuIO(t *testing.T) {
	t.Helper()
	testenv.Require(t, "qemu-io")
}

// qemuIO runs one qemu-io command against an NBD export.
func qemuIO(ctx context.Context, nbdAddr, export, command string) (string, error) {
	out, err := exec.CommandContext(ctx, "qemu-io", "-f", "raw",
		"nbd://"+nbdAddr+"/"+export, "-c", command).CombinedOutput()
	return string(out), err
}

// testController stands in for the controller: it keeps volume layouts
// and answers reports by persisting a layout with a higher epoch. With a
// gate set, it holds each fault report until the gate is opened.
type testController struct {
	apiv1.UnimplementedControllerServer

	mu       sync.Mutex
	layouts  map[string]*apiv1.Layout
	reports  chan *apiv1.ReportReplicaFaultedRequest
	gate     chan struct{}
	listener net.Listener
}

func startController(t *testing.T) *testController {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &testController{
		layouts:  map[string]*apiv1.Layout{},
		reports:  make(chan *apiv1.ReportReplicaFaultedRequest, 16),
		gate:     make(chan struct{}),
		listener: l,
	}
	s := grpc.NewServer()
	apiv1.RegisterControllerServer(s, c)
	go s.Serve(l)
	t.Cleanup(func() {
		c.open()
		s.Stop()
	})
	return c
}

func (c *testController) addr() string { return c.listener.Addr().String() }

func (c *testController) put(l *apiv1.Layout) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.layouts[l.GetVolumeId()] = l
}

func (c *testController) open() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.gate:
	default:
		close(c.gate)
	}
}

// ReportReplicaFaulted marks the replica Faulted at the next epoch.
func (c *testController) ReportReplicaFaulted(ctx context.Context, req *apiv1.ReportReplicaFaultedRequest) (*apiv1.ReportReplicaFaultedResponse, error) {
	select {
	case c.reports <- req:
	default:
	}
	select {
	case <-c.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	l, err := c.update(req.GetVolumeId(), req.GetNodeId(), apiv1.ReplicaState_REPLICA_STATE_FAULTED)
	return &apiv1.ReportReplicaFaultedResponse{Layout: l}, err
}

// ReportReplicaSynced marks the replica InSync at the next epoch.
func (c *testController) ReportReplicaSynced(_ context.Context, req *apiv1.ReportReplicaSyncedRequest) (*apiv1.ReportReplicaSyncedResponse, error) {
	l, err := c.update(req.GetVolumeId(), req.GetNodeId(), apiv1.ReplicaState_REPLICA_STATE_IN_SYNC)
	return &apiv1.ReportReplicaSyncedResponse{Layout: l}, err
}

func (c *testController) update(volume, node string, state apiv1.ReplicaState) (*apiv1.Layout, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.layouts[volume]
	if !ok {
		return nil, status.Error(codes.NotFound, "unknown volume")
	}
	if replicaState(cur, node) == state {
		return cur, nil
	}
	next := &apiv1.Layout{VolumeId: cur.VolumeId, SizeBytes: cur.SizeBytes, Epoch: cur.Epoch + 1, Primary: cur.Primary}
	for _, r := range cur.Replicas {
		r = &apiv1.ReplicaInfo{NodeId: r.NodeId, Zone: r.Zone, Address: r.Address, State: r.State}
		if r.NodeId == node {
			r.State = state
		}
		next.Replicas = append(next.Replicas, r)
	}
	c.layouts[volume] = next
	return next, nil
}

func replicaState(l *apiv1.Layout, node string) apiv1.ReplicaState {
	for _, r := range l.GetReplicas() {
		if r.GetNodeId() == node {
			return r.GetState()
		}
	}
	return apiv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

var errTimeout = errors.New("timed out")

// eventually polls cond until it holds or timeout passes.
func eventually(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errTimeout
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
