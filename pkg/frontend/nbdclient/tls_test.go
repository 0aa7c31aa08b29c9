package nbdclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/nbd"
)

// tlsPKI is a CA with a node (server) and a frontend (client)
// certificate.
type tlsPKI struct {
	ca       *certs.CA
	node     *certs.Bundle
	frontend *certs.Bundle
}

func newTLSPKI(t *testing.T, frontendOf string) *tlsPKI {
	t.Helper()
	ca, err := certs.NewCA("nbdclient test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(req certs.Request) *certs.Bundle {
		leaf, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := certs.NewBundle(ca, leaf)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return &tlsPKI{
		ca:       ca,
		node:     issue(certs.Request{Role: certs.RoleNode, Name: "n1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}),
		frontend: issue(certs.Request{Role: certs.RoleFrontend, Name: frontendOf}),
	}
}

// clientTLS is the frontend's configuration, expecting a node.
func (p *tlsPKI) clientTLS() *tls.Config {
	return p.frontend.ClientConfig(certs.AllowRoles(certs.RoleNode))
}

// serveTLS serves exps in forced TLS mode with the node certificate,
// letting frontends open only the exports attached to their node, and
// returns the address. Closing the returned server drops every
// connection.
func serveTLS(t *testing.T, pki *tlsPKI, exps nbd.Exports, attached map[string]string, addr string) (string, *nbd.Server) {
	t.Helper()
	opts := nbd.Options{TLS: pki.node.ServerConfig(nil)}
	if attached != nil {
		opts.Authorize = func(peer *x509.Certificate, export string) error {
			p, err := certs.PeerOf(peer)
			if err != nil {
				return err
			}
			if p.Role != certs.RoleFrontend || attached[export] != p.Name {
				return fmt.Errorf("%s may not open %q", p, export)
			}
			return nil
		}
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.NewServer(exps, opts)
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String(), srv
}

// fixedEndpoint always resolves to addr.
func fixedEndpoint(addr string) Endpoint {
	return func(context.Context) (string, error) { return addr, nil }
}

func TestTLSSessionReadsAndWrites(t *testing.T) {
	pki := newTLSPKI(t, "n1")
	exp := newMemExport(exportSize)
	addr, _ := serveTLS(t, pki, exports{exportName: exp}, map[string]string{exportName: "n1"}, "127.0.0.1:0")
	c, err := Dial(context.Background(), Options{Endpoint: fixedEndpoint(addr), ExportName: exportName,
		RetryTimeout: 5 * time.Second, TLS: pki.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	data := pattern(1<<20, 3)
	if err := c.WriteAt(ctx, data, 512, true); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(exp.bytes(512, len(data)), data) {
		t.Fatal("export does not hold what was written over TLS")
	}
	got := make([]byte, len(data))
	if err := c.ReadAt(ctx, got, 512); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAt over TLS: %v, equal %v", err, bytes.Equal(got, data))
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTLSSessionReconnects(t *testing.T) {
	pki := newTLSPKI(t, "n1")
	exp := newMemExport(exportSize)
	addr, srv := serveTLS(t, pki, exports{exportName: exp}, nil, "127.0.0.1:0")
	var mu sync.Mutex
	current := addr
	endpoint := func(context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}
	c, err := Dial(context.Background(), Options{Endpoint: endpoint, ExportName: exportName,
		RetryTimeout: 10 * time.Second, TLS: pki.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Close()
	next, _ := serveTLS(t, pki, exports{exportName: exp}, nil, "127.0.0.1:0")
	mu.Lock()
	current = next
	mu.Unlock()
	if err := c.WriteAt(context.Background(), []byte("after"), 0, true); err != nil {
		t.Fatalf("write after the server moved: %v", err)
	}
	if got := exp.bytes(0, 5); string(got) != "after" {
		t.Errorf("export holds %q", got)
	}
}

func TestTLSRefusals(t *testing.T) {
	pki, other := newTLSPKI(t, "n1"), newTLSPKI(t, "n1")
	exp := newMemExport(exportSize)
	tlsAddr, _ := serveTLS(t, pki, exports{exportName: exp, "vol-2": exp},
		map[string]string{exportName: "n1", "vol-2": "n2"}, "127.0.0.1:0")
	plain := startServer(t, exports{exportName: exp})
	plainAddr, _ := plain.endpoint(context.Background())
	tests := []struct {
		name   string
		addr   string
		export string
		tls    *tls.Config
		want   error
	}{
		{"plain client, TLS server", tlsAddr, exportName, nil, ErrRefused},
		{"TLS client, plain server", plainAddr, exportName, pki.clientTLS(), ErrRefused},
		{"client certificate of another CA", tlsAddr, exportName, func() *tls.Config {
			cfg := other.clientTLS()
			cfg.VerifyConnection = nil // trust any server, so only the server decides
			return cfg
		}(), errRemoteUnknownCA},
		{"server certificate of another CA", tlsAddr, exportName, other.clientTLS(), certs.ErrNotIssuedByCA},
		{"volume attached to another node", tlsAddr, "vol-2", pki.clientTLS(), ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One attempt, so that the error is its refusal rather
			// than a retry timeout on a loaded machine.
			c := &Client{opts: Options{Endpoint: fixedEndpoint(tt.addr), ExportName: tt.export,
				ConnectTimeout: 30 * time.Second, TLS: tt.tls}.withDefaults()}
			s, err := c.connect(context.Background())
			if err == nil {
				s.fail(ErrClosed)
			}
			if !errors.Is(err, tt.want) && !(tt.want == errRemoteUnknownCA && isRemoteUnknownCA(err)) {
				t.Errorf("connect = %v, want %v", err, tt.want)
			}
		})
	}
	if exp.calls.Load() != 0 {
		t.Errorf("export saw %d calls", exp.calls.Load())
	}
}

// errRemoteUnknownCA stands for the TLS alert a server sends when it
// does not know the CA of the client's certificate; crypto/tls reports
// it as an unexported type, so isRemoteUnknownCA matches its text.
var errRemoteUnknownCA = errors.New("remote error: tls: unknown certificate authority")

func isRemoteUnknownCA(err error) bool {
	return err != nil && strings.Contains(err.Error(), errRemoteUnknownCA.Error())
}

func TestTLSConfigNamesTheHostDialled(t *testing.T) {
	base := &tls.Config{MinVersion: tls.VersionTLS13}
	if got := tlsConfig(base, "127.0.0.11:10809"); got.ServerName != "127.0.0.11" || base.ServerName != "" {
		t.Errorf("ServerName %q (base %q), want 127.0.0.11 on a copy", got.ServerName, base.ServerName)
	}
	named := &tls.Config{ServerName: "node-1"}
	if got := tlsConfig(named, "127.0.0.11:10809"); got != named {
		t.Error("a configuration naming its server was changed")
	}
	if tlsConfig(nil, "127.0.0.11:10809") != nil {
		t.Error("no TLS became TLS")
	}
}
