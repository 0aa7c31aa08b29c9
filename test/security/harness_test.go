package security

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/trireme-csi/trireme/internal/testenv"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// nodeCapacity is what each node offers; replica files are sparse.
const nodeCapacity = 2 << 30

// volumeSize is the size of every volume the tests create.
const volumeSize = 32 << 20

// knownDataSize is how much known data each volume holds from offset 0
// before any attack: the checks afterwards read it back.
const knownDataSize = 1 << 20

// system is the cluster every test of the package attacks: a controller
// and node-a, node-b, node-c in zones a, b and c, with mutual TLS.
type system struct {
	*localcluster.System
	tls *localcluster.TLS
	// registry is the controller's Registry service, as an operator.
	registry *api.RegistryClient
	// volumes are published to the node their name says: "A" to
	// node-a, "B" to node-b.
	volumes map[string]*volume
}

// volume is a volume the harness created, published and filled.
type volume struct {
	id          string
	size        int64
	publishedTo string
	generation  uint64
	known       []byte // at offset 0
}

var (
	sharedOnce sync.Once
	shared     *system
	sharedErr  error
	sharedDir  string
	binDir     string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop the cluster:", err)
			code = max(code, 1)
		}
	}
	for _, d := range []string{sharedDir, binDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// cluster returns the package's running system, starting it on first use.
// It needs the loopback addresses 127.0.0.1 to 127.0.0.59, which Linux
// routes to lo, and the Go toolchain unless TRIREME_BINARY names a
// binary.
func cluster(t *testing.T) *system {
	t.Helper()
	if os.Getenv("TRIREME_BINARY") == "" {
		testenv.Require(t, "go")
	}
	sharedOnce.Do(func() { shared, sharedErr = startSystem() })
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// startSystem builds the binary, starts the processes and creates the
// volumes A and B, each holding known data.
func startSystem() (*system, error) {
	bin, err := buildTrireme()
	if err != nil {
		return nil, err
	}
	if sharedDir, err = os.MkdirTemp("", "trireme-security-"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := &system{System: &localcluster.System{Dir: sharedDir, NodeCapacity: nodeCapacity}, volumes: map[string]*volume{}}
	if err := s.start(ctx, bin); err != nil {
		return nil, errors.Join(err, s.stop())
	}
	return s, nil
}

func (s *system) start(ctx context.Context, bin string) error {
	var err error
	if s.Controller, err = localcluster.StartController(ctx, bin, s.Dir, "127.0.0.1"); err != nil {
		return err
	}
	s.tls = s.Controller.TLS
	opts := localcluster.Options{Binary: bin, Dir: s.Dir, Controller: s.Controller.APIAddress,
		CapacityBytes: nodeCapacity, TLSDir: s.tls.Dir}
	if s.Cluster, err = localcluster.Start(ctx, opts, localcluster.ThreeZones); err != nil {
		return err
	}
	if err := s.WaitRegistered(ctx); err != nil {
		return err
	}
	if s.registry, err = s.Controller.DialRegistry(); err != nil {
		return err
	}
	for _, v := range []struct{ name, zone, node string }{{"A", "zone-a", "node-a"}, {"B", "zone-b", "node-b"}} {
		vol, err := s.createVolume(ctx, "security-"+v.name, v.zone, v.node)
		if err != nil {
			return err
		}
		s.volumes[v.name] = vol
	}
	return nil
}

// stop ends every process and removes what they left.
func (s *system) stop() error {
	if s.registry != nil {
		s.registry.Close()
	}
	return s.Stop()
}

// buildTrireme compiles the binary under test.
func buildTrireme() (string, error) {
	if b := os.Getenv("TRIREME_BINARY"); b != "" {
		return filepath.Abs(b)
	}
	var err error
	if binDir, err = os.MkdirTemp("", "trireme-security-bin-"); err != nil {
		return "", err
	}
	bin := filepath.Join(binDir, "trireme")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/trireme-csi/trireme/cmd/trireme").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build trireme: %w\n%s", err, out)
	}
	return bin, nil
}

// blockCapability is a raw block volume for one node.
var blockCapability = &csipb.VolumeCapability{
	AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
	AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
}

// csiController is the controller's CSI Controller service, as the
// external-provisioner and external-attacher call it.
func (s *system) csiController() csipb.ControllerClient {
	return csipb.NewControllerClient(s.Controller.Conn)
}

// createVolume creates a 3-replica volume whose primary is preferably in
// zone, publishes it to node and writes known data through that node's
// frontend certificate.
func (s *system) createVolume(ctx context.Context, name, zone, node string) (*volume, error) {
	top := &csipb.Topology{Segments: map[string]string{api.ZoneTopologyKey: zone}}
	resp, err := s.csiController().CreateVolume(ctx, &csipb.CreateVolumeRequest{
		Name: name, CapacityRange: &csipb.CapacityRange{RequiredBytes: volumeSize},
		VolumeCapabilities: []*csipb.VolumeCapability{blockCapability},
		Parameters:         map[string]string{csi.ParamReplicas: "3", csi.ParamMinInSyncReplicas: "2"},
		AccessibilityRequirements: &csipb.TopologyRequirement{
			Requisite: []*csipb.Topology{top}, Preferred: []*csipb.Topology{top}},
	})
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", name, err)
	}
	v := &volume{id: resp.GetVolume().GetVolumeId(), size: resp.GetVolume().GetCapacityBytes(), publishedTo: node}
	pub, err := s.csiController().ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
		VolumeId: v.id, NodeId: node, VolumeCapability: blockCapability})
	if err != nil {
		return nil, fmt.Errorf("publish volume %s to %s: %w", v.id, node, err)
	}
	if v.generation, err = strconv.ParseUint(pub.GetPublishContext()[csi.PublishGeneration], 10, 64); err != nil {
		return nil, fmt.Errorf("publish volume %s: generation: %w", v.id, err)
	}
	v.known = pattern(knownDataSize, name)
	c, err := s.frontendClient(ctx, v)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.WriteAt(ctx, v.known, 0, true); err != nil {
		return nil, fmt.Errorf("write known data to %s: %w", v.id, err)
	}
	return v, nil
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(n int, seed string) []byte {
	sum := sha256.Sum256([]byte(seed))
	r := rand.New(rand.NewChaCha8(sum))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// bundle returns the cluster certificate of p, issuing it if needed.
func (s *system) bundle(t *testing.T, p certs.Peer) *certs.Bundle {
	t.Helper()
	b, err := s.tls.Bundle(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Identities of the cluster.
func nodePeer(id string) certs.Peer     { return certs.Peer{Role: certs.RoleNode, Name: id} }
func frontendPeer(id string) certs.Peer { return certs.Peer{Role: certs.RoleFrontend, Name: id} }

// frontendClient opens v as the frontend of the node it is published to
// does: with that node's frontend certificate, on the primary the
// controller names, under the attachment generation of the publish.
func (s *system) frontendClient(ctx context.Context, v *volume) (*nbdclient.Client, error) {
	b, err := s.tls.Bundle(frontendPeer(v.publishedTo))
	if err != nil {
		return nil, err
	}
	return nbdclient.Dial(ctx, nbdclient.Options{
		Endpoint:     s.primaryEndpoint(v.id),
		ExportName:   api.ExportName(v.id, v.generation),
		RetryTimeout: time.Minute,
		TLS:          b.ClientConfig(certs.AllowRoles(certs.RoleNode)),
	})
}

// primaryEndpoint resolves the NBD address of the volume's primary
// through the controller, as the frontend does before every connection.
func (s *system) primaryEndpoint(id string) nbdclient.Endpoint {
	return func(ctx context.Context) (string, error) {
		resp, err := s.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: id})
		if err != nil {
			return "", err
		}
		return resp.GetPrimaryNbdAddress(), nil
	}
}

// locate returns what the controller records about a volume.
func (s *system) locate(t *testing.T, id string) *apiv1.LocateVolumeResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: id})
	if err != nil {
		t.Fatalf("locate %s: %v", id, err)
	}
	return resp
}

// state is what an attack must leave unchanged: the controller's record
// of every volume, and every node's replicas and their contents.
type state struct {
	logs      logMark           // where the process logs ended
	records   map[string]string // volume id -> layout and attachment
	replicas  map[string]string // node -> its replicas, each with epoch and checksum
	knownData map[string]bool   // volume name -> reads back its known data
}

// snapshot records the state of the cluster, once every replica of the
// volumes is InSync.
func (s *system) snapshot(t *testing.T) state {
	t.Helper()
	s.settle(t)
	st := state{logs: s.markLogs(), records: map[string]string{}, replicas: map[string]string{}, knownData: map[string]bool{}}
	for _, v := range s.volumes {
		r := s.locate(t, v.id)
		st.records[v.id] = fmt.Sprintf("layout %v published to %q generation %d", r.GetLayout(),
			r.GetPublishedNodeId(), r.GetAttachmentGeneration())
	}
	for _, n := range s.Nodes {
		st.replicas[n.ID] = s.replicasOf(t, n)
	}
	for name, v := range s.volumes {
		st.knownData[name] = s.holdsKnownData(t, v)
	}
	return st
}

// replicasOf describes a node's replicas: id, size, epoch and checksum.
func (s *system) replicasOf(t *testing.T, n *localcluster.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := n.Client.ListVolumes(ctx, &apiv1.ListVolumesRequest{})
	if err != nil {
		t.Fatalf("list volumes of %s: %v", n.ID, err)
	}
	var out bytes.Buffer
	for _, v := range list.GetVolumes() {
		sum, err := n.Client.ChecksumReplica(ctx, &apiv1.ChecksumReplicaRequest{VolumeId: v.GetVolumeId()})
		if err != nil {
			t.Fatalf("checksum %s on %s: %v", v.GetVolumeId(), n.ID, err)
		}
		fmt.Fprintf(&out, "%s size %d epoch %d sha256 %s\n", v.GetVolumeId(), v.GetSizeBytes(), v.GetEpoch(), sum.GetSha256())
	}
	return out.String()
}

// holdsKnownData reads the volume's known data back through its
// frontend.
func (s *system) holdsKnownData(t *testing.T, v *volume) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := s.frontendClient(ctx, v)
	if err != nil {
		t.Fatalf("open %s: %v", v.id, err)
	}
	defer c.Close()
	got := make([]byte, len(v.known))
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("read %s: %v", v.id, err)
	}
	return bytes.Equal(got, v.known)
}

// settle waits until every replica of the volumes is InSync, as after
// an earlier test's load made the controller fault one.
func (s *system) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, v := range s.volumes {
		for !allInSync(s.locate(t, v.id).GetLayout()) {
			if time.Now().After(deadline) {
				t.Fatalf("volume %s: replicas not InSync after a minute: %v", v.id, s.locate(t, v.id).GetLayout())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func allInSync(l *apiv1.Layout) bool {
	for _, r := range l.GetReplicas() {
		if r.GetState() != apiv1.ReplicaState_REPLICA_STATE_IN_SYNC {
			return false
		}
	}
	return true
}

// checkUnchanged fails t if the cluster's state differs from before. A
// difference is reported with what the processes logged meanwhile about
// faults and failovers, so that one the machine's load caused (a node
// that missed its heartbeats) can be told from the attack's doing.
func (s *system) checkUnchanged(t *testing.T, before state) {
	t.Helper()
	defer func() {
		if t.Failed() {
			for _, l := range s.logLinesSince(before.logs, failoverLog) {
				t.Log(l)
			}
		}
	}()
	after := s.snapshot(t)
	for id, rec := range before.records {
		if after.records[id] != rec {
			t.Errorf("record of %s changed:\nbefore %s\nafter  %s", id, rec, after.records[id])
		}
	}
	for node, reps := range before.replicas {
		if after.replicas[node] != reps {
			t.Errorf("replicas of %s changed:\nbefore\n%safter\n%s", node, reps, after.replicas[node])
		}
	}
	for name, ok := range after.knownData {
		if !ok {
			t.Errorf("volume %s no longer reads back its known data", name)
		}
	}
}

// otherCA is an attacker's CA, unknown to the cluster, with certificates
// that name real identities.
type otherCA struct{ ca *certs.CA }

func newOtherCA(t *testing.T) *otherCA {
	t.Helper()
	ca, err := certs.NewCA("Trireme local cluster CA", time.Hour) // the same name as the real one
	if err != nil {
		t.Fatal(err)
	}
	return &otherCA{ca: ca}
}

// clientConfig returns a TLS client presenting a certificate this CA
// issued for p; like an attacker, it does not check the server.
func (o *otherCA) clientConfig(t *testing.T, p certs.Peer) *tls.Config {
	t.Helper()
	leaf, err := o.ca.Issue(certs.Request{Role: p.Role, Name: p.Name})
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{leaf.TLSCertificate()},
		InsecureSkipVerify: true}
}
