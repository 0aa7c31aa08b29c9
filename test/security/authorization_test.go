package security

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/internal/nbdwire"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// nodeMutations are the Node API calls only the controller may make,
// each aimed at volume A or at a volume of the attacker's.
func nodeMutations(s *system) map[string]func(context.Context, apiv1.NodeClient) error {
	a := s.volumes["A"]
	return map[string]func(context.Context, apiv1.NodeClient) error{
		"CreateReplica": func(ctx context.Context, c apiv1.NodeClient) error {
			_, err := c.CreateReplica(ctx, &apiv1.CreateReplicaRequest{VolumeId: "vol-attacker", SizeBytes: volumeSize})
			return err
		},
		"DeleteReplica": func(ctx context.Context, c apiv1.NodeClient) error {
			_, err := c.DeleteReplica(ctx, &apiv1.DeleteReplicaRequest{VolumeId: a.id})
			return err
		},
		"SetLayout": func(ctx context.Context, c apiv1.NodeClient) error {
			l, err := s.registry.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: a.id})
			if err != nil {
				return err
			}
			layout := l.GetLayout()
			layout.Epoch += 100
			layout.Primary = "node-c"
			_, err = c.SetLayout(ctx, &apiv1.SetLayoutRequest{Layout: layout})
			return err
		},
		"ExpandReplica": func(ctx context.Context, c apiv1.NodeClient) error {
			_, err := c.ExpandReplica(ctx, &apiv1.ExpandReplicaRequest{VolumeId: a.id, SizeBytes: 2 * volumeSize})
			return err
		},
	}
}

// TestNodeCertificateCannotChangeReplicas calls every Node API mutation
// on every node with node-a's own certificate, as a compromised node-a
// would: the Node API admits only the controller and operators, so the
// TLS handshake refuses the node. An operator's certificate passes the
// handshake and is refused by the rules: PERMISSION_DENIED.
func TestNodeCertificateCannotChangeReplicas(t *testing.T) {
	s := cluster(t)
	before := s.snapshot(t)
	for _, caller := range []struct {
		peer     certs.Peer
		code     codes.Code
		inStatus string
	}{
		{nodePeer("node-a"), codes.Unavailable, alertBadCertificate},
		{frontendPeer("node-a"), codes.Unavailable, alertBadCertificate},
		{localcluster.AdminPeer, codes.PermissionDenied, "only the controller changes replicas"},
	} {
		for _, n := range s.Nodes {
			client := s.dialNode(t, n, caller.peer)
			for name, call := range nodeMutations(s) {
				t.Run(caller.peer.String()+"/"+n.ID+"/"+name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
					defer cancel()
					expectCode(t, call(ctx, client), caller.code, caller.inStatus)
				})
			}
		}
	}
	s.checkUnchanged(t, before)
}

// TestNodeCertificateCannotSpeakForAnotherNode calls the controller's
// API with node-a's certificate about node-b and about a volume whose
// primary is node-b: each is PERMISSION_DENIED, and the controller's
// records do not change.
func TestNodeCertificateCannotSpeakForAnotherNode(t *testing.T) {
	s := cluster(t)
	before := s.snapshot(t)
	b := s.volumes["B"]
	if p := s.locate(t, b.id).GetLayout().GetPrimary(); p == "node-a" {
		t.Fatalf("volume B's primary is node-a; the attack needs another primary")
	}
	nodeB := s.Node("node-b")
	calls := []struct {
		name string
		call func(context.Context, *api.RegistryClient, *api.ControllerClient) error
		want string
	}{
		{"RegisterNode as node-b", func(ctx context.Context, r *api.RegistryClient, _ *api.ControllerClient) error {
			_, err := r.RegisterNode(ctx, &apiv1.RegisterNodeRequest{NodeId: "node-b", Zone: "zone-b",
				DataAddress: nodeB.ReplicationAddr, ApiAddress: nodeB.APIAddress, NbdAddress: "127.0.0.1:1"})
			return err
		}, `may not speak for node "node-b"`},
		{"Heartbeat as node-b", func(ctx context.Context, r *api.RegistryClient, _ *api.ControllerClient) error {
			_, err := r.Heartbeat(ctx, &apiv1.HeartbeatRequest{NodeId: "node-b", FreeBytes: 1})
			return err
		}, `may not speak for node "node-b"`},
		{"RegisterNode as a new node", func(ctx context.Context, r *api.RegistryClient, _ *api.ControllerClient) error {
			_, err := r.RegisterNode(ctx, &apiv1.RegisterNodeRequest{NodeId: "node-x", Zone: "zone-x",
				DataAddress: "127.0.0.1:1", ApiAddress: "127.0.0.1:2", NbdAddress: "127.0.0.1:3"})
			return err
		}, `may not speak for node "node-x"`},
		{"ReportReplicaFaulted of volume B", func(ctx context.Context, _ *api.RegistryClient, c *api.ControllerClient) error {
			epoch := s.locate(t, b.id).GetLayout().GetEpoch()
			_, err := c.ReportReplicaFaulted(ctx, &apiv1.ReportReplicaFaultedRequest{VolumeId: b.id, Epoch: epoch,
				NodeId: "node-c", Cause: "attack"})
			return err
		}, "is not the primary of volume " + b.id},
		{"ReportReplicaSynced of volume B", func(ctx context.Context, _ *api.RegistryClient, c *api.ControllerClient) error {
			epoch := s.locate(t, b.id).GetLayout().GetEpoch()
			_, err := c.ReportReplicaSynced(ctx, &apiv1.ReportReplicaSyncedRequest{VolumeId: b.id, Epoch: epoch, NodeId: "node-c"})
			return err
		}, "is not the primary of volume " + b.id},
	}
	reg, ctrl := s.dialController(t, nodePeer("node-a"))
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			defer cancel()
			expectCode(t, c.call(ctx, reg, ctrl), codes.PermissionDenied, c.want)
		})
	}
	t.Run("frontend certificate", func(t *testing.T) {
		reg, _ := s.dialController(t, frontendPeer("node-a"))
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		_, err := reg.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: b.id})
		expectCode(t, err, codes.Unavailable, alertBadCertificate)
	})
	s.checkUnchanged(t, before)
}

// TestStolenFrontendCertificateCannotOpenAnotherVolume opens volume B,
// attached to node-b, with the frontend certificate of node-a, to which
// volume A is attached, on every node's NBD server: every way of asking
// is refused by policy (or, for NBD_OPT_EXPORT_NAME, by closing), and
// NBD_OPT_LIST never names B. The same certificate is refused on the
// replication and Node API ports.
func TestStolenFrontendCertificateCannotOpenAnotherVolume(t *testing.T) {
	s := cluster(t)
	before := s.snapshot(t)
	b := s.volumes["B"]
	stolen := s.bundle(t, frontendPeer("node-a")).ClientConfig(certs.AllowRoles(certs.RoleNode))
	for _, n := range s.Nodes {
		t.Run("NBD of "+n.ID, func(t *testing.T) {
			for _, name := range []string{b.id, api.ExportName(b.id, b.generation), api.ExportName(b.id, b.generation+1)} {
				nc := nbdOverTLS(t, n.NBDAddress, stolen)
				for _, opt := range []uint32{nbdOptInfo, nbdOptGo} {
					nc.send(t, opt, nbdGoPayload(name))
					if r := nc.replyTo(t, opt); r.typ != nbdwire.RepErrPolicy {
						t.Errorf("option %d for %q: reply type %#x, want NBD_REP_ERR_POLICY", opt, name, r.typ)
					}
				}
				if names := nc.list(t); containsVolume(names, b.id) {
					t.Errorf("NBD_OPT_LIST names volume B: %q", names)
				}
				nc.send(t, nbdOptExportName, []byte(name))
				if got, err := readToClose(nc.c, ioTimeout); len(got) > 0 || isTimeout(err) {
					t.Errorf("NBD_OPT_EXPORT_NAME %q: read %d bytes, %v; want the connection closed", name, len(got), err)
				}
			}
		})
	}
	t.Run("NBD client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := nbdclient.Dial(ctx, nbdclient.Options{Endpoint: s.primaryEndpoint(b.id),
			ExportName: api.ExportName(b.id, b.generation), TLS: stolen})
		if err == nil {
			c.Close()
		}
		if !errors.Is(err, nbdclient.ErrForbidden) {
			t.Fatalf("Dial: %v, want %v", err, nbdclient.ErrForbidden)
		}
	})
	t.Run("replication and node API", func(t *testing.T) {
		for _, p := range s.ports() {
			if p.kind == replicationPort || p.kind == nodeAPI {
				cfg := stolen.Clone()
				cfg.VerifyConnection = nil
				expectTLSAlert(t, tlsRefusal(dialTCP(t, p.addr), cfg), alertBadCertificate)
			}
		}
	})
	s.checkUnchanged(t, before)
}

// nbdOverTLS negotiates STARTTLS with cfg on the NBD server at addr and
// returns the connection, in negotiation over TLS.
func nbdOverTLS(t *testing.T, addr string, cfg *tls.Config) *nbdConn {
	t.Helper()
	raw := nbdNegotiate(t, dialTCP(t, addr)).startTLS(t)
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return &nbdConn{c: tc, br: bufio.NewReader(tc)}
}

// replyTo reads the reply to opt.
func (n *nbdConn) replyTo(t *testing.T, opt uint32) nbdReply {
	t.Helper()
	r, err := n.reply()
	if err != nil {
		t.Fatalf("reply to option %d: %v", opt, err)
	}
	if r.opt != opt {
		t.Fatalf("reply to option %d, want %d", r.opt, opt)
	}
	return r
}

// list sends NBD_OPT_LIST and returns the export names of the replies.
func (n *nbdConn) list(t *testing.T) []string {
	t.Helper()
	n.send(t, nbdOptList, nil)
	var names []string
	for {
		r := n.replyTo(t, nbdOptList)
		switch {
		case r.typ == nbdwire.RepAck:
			return names
		case r.typ == nbdRepServer && len(r.data) >= 4:
			l := binary.BigEndian.Uint32(r.data)
			names = append(names, string(r.data[4:4+min(int(l), len(r.data)-4)]))
		default:
			t.Fatalf("NBD_OPT_LIST: reply type %#x", r.typ)
		}
	}
}

func containsVolume(names []string, id string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, id) {
			return true
		}
	}
	return false
}

// dialNode returns a Node API client of n presenting p's certificate.
func (s *system) dialNode(t *testing.T, n *localcluster.Node, p certs.Peer) *api.NodeClient {
	t.Helper()
	c, err := api.DialNode(n.APIAddress, s.credentials(t, p, certs.RoleNode))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dialController returns clients of the controller's Registry and
// Controller services presenting p's certificate.
func (s *system) dialController(t *testing.T, p certs.Peer) (*api.RegistryClient, *api.ControllerClient) {
	t.Helper()
	creds := s.credentials(t, p, certs.RoleController)
	reg, err := api.DialRegistry(s.Controller.APIAddress, creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	ctrl, err := api.DialController(s.Controller.APIAddress, creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrl.Close() })
	return reg, ctrl
}

// credentials presents p's certificate to a server of role server.
func (s *system) credentials(t *testing.T, p certs.Peer, server certs.Role) grpc.DialOption {
	t.Helper()
	return api.ClientCredentials(s.bundle(t, p), certs.AllowRoles(server))
}

// expectCode checks a call's gRPC code and that its message contains
// want. A handshake refusal can also reach a gRPC client as the
// connection closing before it read the alert.
func expectCode(t *testing.T, err error, code codes.Code, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the call succeeded; want %s", code)
	}
	msg := status.Convert(err).Message()
	closed := code == codes.Unavailable && (strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset"))
	if status.Code(err) != code || !strings.Contains(msg, want) && !closed {
		t.Fatalf("got %v; want code %s with %q", err, code, want)
	}
}
