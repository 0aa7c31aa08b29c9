package localcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/internal/testcerts"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// client is one way of connecting to the cluster's ports.
type client struct {
	name string
	// tls is the client's TLS configuration; nil speaks plain TCP.
	tls *tls.Config
	// admitted says whether the cluster's servers should talk to it.
	admitted bool
}

// TestEveryPortRefusesStrangers starts a controller and a node agent as
// `trireme` processes with --tls-dir, and connects to each of their ports
// (controller API, Node API, replication, NBD) as a plain TCP client, as
// a client with a certificate of another CA, and, to show that the probe
// can tell, as a client of the cluster's CA: only the last is served.
func TestEveryPortRefusesStrangers(t *testing.T) {
	bin, err := buildTrireme()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl, err := StartController(ctx, bin, dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctl.Stop(5 * time.Second) })
	c, err := Start(ctx, Options{Binary: bin, Dir: dir, Controller: ctl.APIAddress},
		[]NodeSpec{{ID: "node-x", Zone: "zone-x", IP: "127.0.0.7"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	node := c.Nodes[0]

	// A stranger trusts any server, to get as far as the server lets it,
	// and presents its certificate whatever CAs the server asks for.
	strangerCert := testcerts.Bundle(t, testcerts.CA(t), AdminPeer).Cert
	stranger := &tls.Config{
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &strangerCert, nil
		},
	}
	member := func(p certs.Peer) *tls.Config {
		b, err := c.TLS.Bundle(p)
		if err != nil {
			t.Fatal(err)
		}
		return b.ClientConfig(nil)
	}
	for _, port := range []struct {
		name  string
		probe func(t *testing.T, cfg *tls.Config) error
		as    certs.Peer // the cluster identity the server admits
	}{
		{"controller API", func(t *testing.T, cfg *tls.Config) error { return probeController(ctx, ctl.APIAddress, cfg) }, AdminPeer},
		{"node API", func(t *testing.T, cfg *tls.Config) error { return probeNodeAPI(ctx, node.APIAddress, cfg) }, AdminPeer},
		{"replication", func(t *testing.T, cfg *tls.Config) error { return probeReplication(node.ReplicationAddr, cfg) },
			certs.Peer{Role: certs.RoleNode, Name: "node-y"}},
		{"NBD", func(t *testing.T, cfg *tls.Config) error { return probeNBD(ctx, node.NBDAddress, cfg) }, AdminPeer},
	} {
		for _, cl := range []client{
			{"plain TCP", nil, false},
			{"certificate of another CA", stranger, false},
			{"certificate of the cluster CA", member(port.as), true},
		} {
			t.Run(port.name+"/"+cl.name, func(t *testing.T) {
				err := port.probe(t, cl.tls)
				switch {
				case cl.admitted && err != nil:
					t.Fatalf("refused a member: %v", err)
				case !cl.admitted && err == nil:
					t.Fatal("served a stranger")
				case !cl.admitted:
					t.Logf("refused: %v", err)
				}
			})
		}
	}
	if fileHas(node.LogPath(), "panic") || fileHas(ctl.LogPath(), "panic") {
		t.Error("a process logged a panic")
	}
}

func dialCreds(cfg *tls.Config) grpc.DialOption {
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// probeController asks the controller where a volume is: a served client
// learns that it does not exist.
func probeController(ctx context.Context, addr string, cfg *tls.Config) error {
	reg, err := api.DialRegistry(addr, dialCreds(cfg))
	if err != nil {
		return err
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = reg.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: "no-such-volume"})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return err
}

// probeNodeAPI lists the node's volumes.
func probeNodeAPI(ctx context.Context, addr string, cfg *tls.Config) error {
	n, err := api.DialNode(addr, dialCreds(cfg))
	if err != nil {
		return err
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = n.ListVolumes(ctx, &apiv1.ListVolumesRequest{})
	return err
}

// probeReplication sends a hello with no volume and a high epoch: a
// served client gets an answer (a refusal of the malformed hello).
func probeReplication(addr string, cfg *tls.Config) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	if cfg != nil {
		nc = tls.Client(nc, cfg)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	hello := replication.Frame{Op: replication.OpHello, ID: 1, Epoch: 1 << 40}
	if _, err := hello.WriteTo(nc); err != nil {
		return err
	}
	f, err := replication.ReadFrame(nc)
	if err != nil {
		return err
	}
	if f.Status == replication.StatusOK {
		return errors.New("a hello without a volume was accepted")
	}
	return nil
}

// probeNBD opens the NBD server's export list as an operator would.
func probeNBD(ctx context.Context, addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cl, err := nbdclient.Dial(ctx, nbdclient.Options{
		Endpoint:       func(context.Context) (string, error) { return addr, nil },
		ExportName:     "no-such-volume",
		TLS:            cfg,
		ConnectTimeout: 5 * time.Second,
		RetryTimeout:   time.Second,
	})
	if err == nil {
		cl.Close()
		return errors.New("opened an export that does not exist")
	}
	// A served client gets as far as the export lookup.
	if errors.Is(err, nbdclient.ErrUnknownExport) {
		return nil
	}
	return err
}

func fileHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}
