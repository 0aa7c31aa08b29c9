package nbd

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// testPKI is a cluster CA with the certificates the TLS tests use.
type testPKI struct {
	ca       *certs.CA
	server   *certs.Bundle // node n1, serving on 127.0.0.1
	frontend *certs.Bundle // frontend of node n1
	admin    *certs.Bundle
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := certs.NewCA("nbd test CA", time.Hour)
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
	return &testPKI{
		ca:       ca,
		server:   issue(certs.Request{Role: certs.RoleNode, Name: "n1", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}),
		frontend: issue(certs.Request{Role: certs.RoleFrontend, Name: "n1"}),
		admin:    issue(certs.Request{Role: certs.RoleAdmin, Name: "backup"}),
	}
}

// tlsOptions serves with the PKI's node certificate, requiring clients
// of any role the CA issued.
func (p *testPKI) tlsOptions() Options {
	return Options{TLS: p.server.ServerConfig(nil)}
}

// clientConfig is a client's TLS configuration that expects the node.
func (p *testPKI) clientConfig(b *certs.Bundle) *tls.Config {
	return b.ClientConfig(certs.AllowRoles(certs.RoleNode))
}

// startTLS sends NBD_OPT_STARTTLS, expects the ACK and runs the client
// side of the handshake, returning its error.
func (c *testClient) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	c.sendOption(optStartTLS, nil)
	if r := c.readOptionReply(); r.option != optStartTLS || r.typ != nbdwire.RepAck {
		c.t.Fatalf("reply %+v, want ACK to NBD_OPT_STARTTLS", r)
	}
	tc := tls.Client(c.nc, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		return err
	}
	tc.SetDeadline(time.Time{})
	c.nc, c.br = tc, bufio.NewReader(tc)
	return nil
}

// mustStartTLS upgrades the client or fails the test.
func (c *testClient) mustStartTLS(cfg *tls.Config) {
	c.t.Helper()
	if err := c.startTLS(cfg); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
}

// listNames sends NBD_OPT_LIST and returns the names, or the error reply
// type.
func (c *testClient) listNames() ([]string, uint32) {
	c.t.Helper()
	c.sendOption(optList, nil)
	rs := c.readOptionReplies()
	var names []string
	for _, r := range rs[:len(rs)-1] {
		names = append(names, string(r.data[4:]))
	}
	return names, rs[len(rs)-1].typ
}

func TestForcedTLSRefusesEveryOptionBeforeStartTLS(t *testing.T) {
	pki := newTestPKI(t)
	exp, exports := oneExport()
	c, done := servePair(t, NewServer(exports, pki.tlsOptions()))
	c.handshake(clientFixedNewstyle | clientNoZeroes)
	for _, opt := range []struct {
		option  uint32
		payload []byte
	}{
		{optList, nil},
		{optInfo, infoPayload("vol", infoName)},
		{nbdwire.OptGo, infoPayload("vol")},
		{nbdwire.OptGo, infoPayload("")},
		{optStructuredReply, nil},
		{optListMetaContext, nil},
		{99, []byte("x")},
	} {
		c.sendOption(opt.option, opt.payload)
		r := c.readOptionReply()
		if r.option != opt.option || r.typ != repErrTLSReqd || len(r.data) != 0 {
			t.Errorf("option %d: reply %+v, want NBD_REP_ERR_TLS_REQD without data", opt.option, r)
		}
	}
	c.sendOption(optExportName, []byte("vol"))
	c.expectClosed()
	if err := waitServeConn(t, done); !errors.Is(err, errTLSRequired) {
		t.Errorf("ServeConn = %v, want errTLSRequired", err)
	}
	if n := exp.calls(); n != 0 {
		t.Errorf("export saw %d calls", n)
	}
}

func TestForcedTLSAllowsAbort(t *testing.T) {
	pki := newTestPKI(t)
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, pki.tlsOptions()))
	c.handshake(clientFixedNewstyle)
	c.sendOption(optAbort, nil)
	if r := c.readOptionReply(); r.typ != nbdwire.RepAck {
		t.Errorf("reply %+v, want ACK", r)
	}
	if err := waitServeConn(t, done); err != nil {
		t.Errorf("ServeConn = %v", err)
	}
}

func TestStartTLSThenNegotiateAndTransmit(t *testing.T) {
	pki := newTestPKI(t)
	exp, exports := oneExport()
	exports["other"] = newMemExport(512)
	addr, _ := startServer(t, exports, pki.tlsOptions())
	c := dial(t, addr)
	c.handshake(clientFixedNewstyle | clientNoZeroes)
	c.mustStartTLS(pki.clientConfig(pki.frontend))

	names, final := c.listNames()
	if final != nbdwire.RepAck || !reflect.DeepEqual(names, []string{"other", "vol"}) {
		t.Errorf("LIST over TLS: %q, final %#x", names, final)
	}
	c.sendOption(optStartTLS, nil)
	if r := c.readOptionReply(); r.typ != repErrInvalid {
		t.Errorf("second STARTTLS: reply %+v, want NBD_REP_ERR_INVALID", r)
	}
	c.sendOption(nbdwire.OptGo, infoPayload("vol", nbdwire.InfoBlockSize))
	if rs := c.readOptionReplies(); rs[len(rs)-1].typ != nbdwire.RepAck {
		t.Fatalf("GO over TLS: %+v", rs)
	}
	data := pattern(64<<10, 7)
	c.send(nbdwire.CmdWrite, nbdwire.CmdFlagFUA, 1, 4096, uint32(len(data)), data)
	c.expectReply(1, 0)
	if got := c.readAt(2, 4096, uint32(len(data))); !bytes.Equal(got, data) {
		t.Error("read back over TLS differs from what was written")
	}
	if !bytes.Equal(exp.data()[4096:4096+len(data)], data) {
		t.Error("export does not hold the data written over TLS")
	}
	c.send(nbdwire.CmdDisc, 0, 3, 0, 0, nil)
}

func TestStartTLSRefusals(t *testing.T) {
	pki := newTestPKI(t)
	other := newTestPKI(t)
	tests := []struct {
		name   string
		client func() *tls.Config
	}{
		{"certificate from another CA", func() *tls.Config { return other.clientConfig(other.frontend) }},
		{"no certificate", func() *tls.Config {
			return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pki.ca.Pool(), ServerName: "127.0.0.1"}
		}},
		{"TLS 1.2", func() *tls.Config {
			cfg := pki.clientConfig(pki.frontend)
			cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return cfg
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, exports := oneExport()
			c, done := servePair(t, NewServer(exports, pki.tlsOptions()))
			c.handshake(clientFixedNewstyle)
			if err := c.startTLS(tt.client()); err == nil {
				// TLS 1.3 clients hear of a refused certificate
				// on their first read.
				c.sendOption(optList, nil)
				if _, err := c.br.ReadByte(); err == nil {
					t.Fatal("server answered a client it should have refused")
				}
			}
			if err := waitServeConn(t, done); !errors.Is(err, errTLSHandshake) {
				t.Errorf("ServeConn = %v, want errTLSHandshake", err)
			}
			if n := exp.calls(); n != 0 {
				t.Errorf("export saw %d calls", n)
			}
		})
	}
}

func TestStartTLSOptionChecks(t *testing.T) {
	pki := newTestPKI(t)
	tests := []struct {
		name    string
		opts    Options
		payload []byte
		want    uint32
	}{
		{"without TLS configured", Options{}, nil, repErrUnsup},
		{"with a payload", pki.tlsOptions(), []byte{0}, repErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, exports := oneExport()
			c, done := servePair(t, NewServer(exports, tt.opts))
			c.handshake(clientFixedNewstyle)
			c.sendOption(optStartTLS, tt.payload)
			if r := c.readOptionReply(); r.option != optStartTLS || r.typ != tt.want {
				t.Errorf("reply %+v, want type %#x", r, tt.want)
			}
			c.abort(done)
		})
	}
}

func TestTLSHandshakeIsUnderTheHandshakeDeadline(t *testing.T) {
	pki := newTestPKI(t)
	_, exports := oneExport()
	opts := pki.tlsOptions()
	opts.HandshakeTimeout = 200 * time.Millisecond
	c, done := servePair(t, NewServer(exports, opts))
	start := time.Now()
	c.handshake(clientFixedNewstyle)
	c.sendOption(optStartTLS, nil)
	c.readOptionReply()
	c.write([]byte{0x16, 0x03}) // the start of a ClientHello, then silence
	err := waitServeConn(t, done)
	if !errors.Is(err, errTLSHandshake) || !errors.Is(err, errHandshakeTimeout) {
		t.Errorf("ServeConn = %v, want a TLS handshake timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed after %v, want about 200ms", d)
	}
}

// volumeOfNode is the Authorize rule the tests use: a frontend may open
// only the exports attached to its node, an admin any export.
func volumeOfNode(attached map[string]string) func(*x509.Certificate, string) error {
	return func(peer *x509.Certificate, export string) error {
		if peer == nil {
			return errors.New("no client certificate")
		}
		p, err := certs.PeerOf(peer)
		if err != nil {
			return err
		}
		switch {
		case p.Role == certs.RoleAdmin:
			return nil
		case p.Role == certs.RoleFrontend && attached[export] == p.Name:
			return nil
		}
		return fmt.Errorf("%s may not open %q", p, export)
	}
}

func TestAuthorizeLimitsExportsToThePeer(t *testing.T) {
	pki := newTestPKI(t)
	volA, volB := newMemExport(4096), newMemExport(4096)
	exports := memExports{"vol-a": volA, "vol-b": volB}
	opts := pki.tlsOptions()
	opts.Authorize = volumeOfNode(map[string]string{"vol-a": "n1", "vol-b": "n2"})
	addr, _ := startServer(t, exports, opts)

	c := dial(t, addr)
	c.handshake(clientFixedNewstyle | clientNoZeroes)
	c.mustStartTLS(pki.clientConfig(pki.frontend))
	if names, final := c.listNames(); final != nbdwire.RepAck || !reflect.DeepEqual(names, []string{"vol-a"}) {
		t.Errorf("frontend n1 lists %q (final %#x), want only vol-a", names, final)
	}
	for _, option := range []uint32{optInfo, nbdwire.OptGo} {
		for _, name := range []string{"vol-b", "vol-missing"} {
			c.sendOption(option, infoPayload(name))
			if r := c.readOptionReply(); r.typ != nbdwire.RepErrPolicy {
				t.Errorf("option %d for %s: reply %+v, want NBD_REP_ERR_POLICY", option, name, r)
			}
		}
	}
	c.connectTLSDone("vol-a")
	c.readAt(1, 0, 512)

	stolen := dial(t, addr)
	stolen.handshake(clientFixedNewstyle)
	stolen.mustStartTLS(pki.clientConfig(pki.frontend))
	stolen.sendOption(optExportName, []byte("vol-b"))
	stolen.expectClosed()
	if volB.calls() != 0 {
		t.Errorf("vol-b saw %d calls from a frontend of another node", volB.calls())
	}

	admin := dial(t, addr)
	admin.handshake(clientFixedNewstyle)
	admin.mustStartTLS(pki.clientConfig(pki.admin))
	if names, _ := admin.listNames(); !reflect.DeepEqual(names, []string{"vol-a", "vol-b"}) {
		t.Errorf("admin lists %q, want both", names)
	}
}

// connectTLSDone sends NBD_OPT_GO on an upgraded connection.
func (c *testClient) connectTLSDone(name string) {
	c.t.Helper()
	c.sendOption(nbdwire.OptGo, infoPayload(name, nbdwire.InfoBlockSize))
	rs := c.readOptionReplies()
	if last := rs[len(rs)-1]; last.typ != nbdwire.RepAck {
		c.t.Fatalf("NBD_OPT_GO %q: reply type %#x", name, last.typ)
	}
}

func TestAuthorizeSeesNoCertificateWithoutTLS(t *testing.T) {
	_, exports := oneExport()
	var mu sync.Mutex
	var seen []*x509.Certificate
	opts := Options{Authorize: func(peer *x509.Certificate, _ string) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, peer)
		return errors.New("plain clients may not open exports")
	}}
	c, done := servePair(t, NewServer(exports, opts))
	c.handshake(clientFixedNewstyle)
	c.sendOption(nbdwire.OptGo, infoPayload("vol"))
	if r := c.readOptionReply(); r.typ != nbdwire.RepErrPolicy {
		t.Errorf("reply %+v, want NBD_REP_ERR_POLICY", r)
	}
	if names, _ := c.listNames(); len(names) != 0 {
		t.Errorf("LIST named %q", names)
	}
	c.abort(done)
	if len(seen) != 2 || seen[0] != nil {
		t.Errorf("Authorize saw %v, want nil certificates", seen)
	}
}

// abort ends negotiation with NBD_OPT_ABORT and waits for the server to
// finish with the connection.
func (c *testClient) abort(done <-chan error) {
	c.t.Helper()
	c.sendOption(optAbort, nil)
	c.readOptionReply()
	if err := waitServeConn(c.t, done); err != nil {
		c.t.Errorf("ServeConn = %v after NBD_OPT_ABORT", err)
	}
}

func TestRefusedOptionsLogAtMostALimit(t *testing.T) {
	logs := captureLogs(t)
	pki := newTestPKI(t)
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, pki.tlsOptions()))
	c.handshake(clientFixedNewstyle)
	for i := 0; i < 3*maxLoggedRejections; i++ {
		c.sendOption(optList, nil)
		c.readOptionReply()
	}
	c.abort(done)
	remote := c.nc.LocalAddr().String()
	if n := strings.Count(strings.Join(logs.about(remote), "\n"), "TLS required"); n != maxLoggedRejections {
		t.Errorf("%d lines about refused options, want %d", n, maxLoggedRejections)
	}
}

func TestTLSAlwaysRequiresAClientCertificate(t *testing.T) {
	pki := newTestPKI(t)
	cfg := pki.server.ServerConfig(nil)
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	_, exports := oneExport()
	c, done := servePair(t, NewServer(exports, Options{TLS: cfg}))
	c.handshake(clientFixedNewstyle)
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pki.ca.Pool(), ServerName: "127.0.0.1"}
	if err := c.startTLS(noCert); err == nil {
		c.sendOption(optList, nil)
		if _, err := c.br.ReadByte(); err == nil {
			t.Fatal("server answered a client without a certificate")
		}
	}
	if err := waitServeConn(t, done); !errors.Is(err, errTLSHandshake) {
		t.Errorf("ServeConn = %v, want errTLSHandshake", err)
	}
	if cfg.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Error("NewServer changed the caller's configuration")
	}
}
