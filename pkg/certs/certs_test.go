package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newTestCA returns a CA, failing the test on error.
func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue returns the bundle of a certificate the CA issues for req.
func issue(t *testing.T, ca *CA, req Request) *Bundle {
	t.Helper()
	leaf, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBundle(ca, leaf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handshake runs a TLS handshake over a pipe and returns both ends'
// errors.
func handshake(server, client *tls.Config) (serverErr, clientErr error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			// A TLS 1.3 client learns that its certificate was
			// refused only from the server's next record.
			_, err = s.Write([]byte{1})
		}
		if err != nil {
			a.Close()
		}
		done <- err
	}()
	c := tls.Client(b, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	b.Close()
	return <-done, clientErr
}

var (
	node1      = Request{Role: RoleNode, Name: "n1", IPs: []net.IP{net.ParseIP("127.0.0.11")}}
	frontend1  = Request{Role: RoleFrontend, Name: "n1"}
	controller = Request{Role: RoleController}
)

func TestMutualTLSBetweenComponentsOfOneCA(t *testing.T) {
	ca := newTestCA(t)
	srv, cli := issue(t, ca, node1), issue(t, ca, frontend1)
	var seen Peer
	serverCfg := srv.ServerConfig(func(p Peer) error { seen = p; return nil })
	sErr, cErr := handshake(serverCfg, cli.ClientConfig(AllowPeer(Peer{RoleNode, "n1"})))
	if sErr != nil || cErr != nil {
		t.Fatalf("handshake: server %v, client %v", sErr, cErr)
	}
	if want := (Peer{RoleFrontend, "n1"}); seen != want {
		t.Errorf("server saw %v, want %v", seen, want)
	}
}

func TestRefusals(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	expired := Request{Role: RoleFrontend, Name: "n1", NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour}
	notYet := Request{Role: RoleFrontend, Name: "n1", NotBefore: time.Now().Add(time.Hour)}
	tests := []struct {
		name           string
		server, client *Bundle
		allowClient    func(Peer) error
		allowServer    func(Peer) error
		wantServerErr  bool // the server refuses the client
	}{
		{"client cert from another CA", issue(t, ca, node1), issue(t, other, frontend1), nil, AllowRoles(RoleNode), true},
		{"server cert from another CA", issue(t, other, node1), issue(t, ca, frontend1), nil, AllowRoles(RoleNode), false},
		{"expired client cert", issue(t, ca, node1), issue(t, ca, expired), nil, AllowRoles(RoleNode), true},
		{"client cert not valid yet", issue(t, ca, node1), issue(t, ca, notYet), nil, AllowRoles(RoleNode), true},
		{"expired server cert", issue(t, ca, Request{Role: RoleNode, Name: "n1", NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour}),
			issue(t, ca, frontend1), nil, AllowRoles(RoleNode), false},
		{"client of a refused role", issue(t, ca, controller), issue(t, ca, node1), AllowRoles(RoleFrontend), AllowRoles(RoleController), true},
		{"server of an unexpected identity", issue(t, ca, Request{Role: RoleNode, Name: "n2"}), issue(t, ca, frontend1), nil,
			AllowPeer(Peer{RoleNode, "n1"}), false},
		{"frontend certificate cannot serve", issue(t, ca, Request{Role: RoleFrontend, Name: "n2"}), issue(t, ca, frontend1), nil,
			AllowRoles(RoleFrontend), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sErr, cErr := handshake(tt.server.ServerConfig(tt.allowClient), tt.client.ClientConfig(tt.allowServer))
			if cErr == nil {
				t.Fatalf("client connected; server error %v", sErr)
			}
			if tt.wantServerErr && sErr == nil {
				t.Errorf("server accepted the client; client error %v", cErr)
			}
		})
	}
}

func TestClientWithoutCertificateRefused(t *testing.T) {
	ca := newTestCA(t)
	srv := issue(t, ca, node1)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: ca.Pool(), ServerName: "127.0.0.11"}
	sErr, cErr := handshake(srv.ServerConfig(nil), cfg)
	if sErr == nil || cErr == nil {
		t.Errorf("handshake without client certificate: server %v, client %v", sErr, cErr)
	}
}

func TestTLS12Refused(t *testing.T) {
	ca := newTestCA(t)
	srv, cli := issue(t, ca, node1), issue(t, ca, frontend1)
	cfg := cli.ClientConfig(AllowRoles(RoleNode))
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if sErr, cErr := handshake(srv.ServerConfig(nil), cfg); sErr == nil || cErr == nil {
		t.Errorf("TLS 1.2 handshake: server %v, client %v", sErr, cErr)
	}
}

func TestIssuedCertificateVerifiesForHostNames(t *testing.T) {
	ca := newTestCA(t)
	leaf, err := ca.Issue(Request{Role: RoleNode, Name: "n1", DNSNames: []string{"n1.example"},
		IPs: []net.IP{net.ParseIP("127.0.0.11")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.11", "n1.example"} {
		if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.12"}); err == nil {
		t.Error("certificate verified for an address it does not name")
	}
}

func TestIdentity(t *testing.T) {
	tests := []struct {
		uris     []string
		role     Role
		name     string
		wantErr  error
		wantDesc string
	}{
		{uris: []string{"trireme://node/n1"}, role: RoleNode, name: "n1"},
		{uris: []string{"trireme://controller"}, role: RoleController},
		{uris: []string{"trireme://frontend/node-a.zone_1"}, role: RoleFrontend, name: "node-a.zone_1"},
		{uris: []string{"spiffe://x/y", "trireme://admin/backup"}, role: RoleAdmin, name: "backup"},
		{uris: nil, wantErr: ErrNoIdentity},
		{uris: []string{"https://node/n1"}, wantErr: ErrNoIdentity},
		{uris: []string{"trireme://node/n1", "trireme://node/n2"}, wantErr: ErrManyIdentities},
		{uris: []string{"trireme://node"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node/"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node/a/b"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node/n1?x=1"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node:1/n1"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://u@node/n1"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://controller/c1"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://root/x"}, wantErr: ErrUnknownRole},
		{uris: []string{"trireme://node/" + strings.Repeat("a", 254)}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node/n%201"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node/n%31"}, wantErr: ErrBadIdentity},
		{uris: []string{"trireme://node/n1?"}, wantErr: ErrBadIdentity},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.uris, ","), func(t *testing.T) {
			cert := &x509.Certificate{}
			for _, s := range tt.uris {
				u, err := url.Parse(s)
				if err != nil {
					t.Fatal(err)
				}
				cert.URIs = append(cert.URIs, u)
			}
			role, name, err := Identity(cert)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Identity = %q, %q, %v; want error %v", role, name, err, tt.wantErr)
			}
			if role != tt.role || name != tt.name {
				t.Errorf("Identity = %q, %q; want %q, %q", role, name, tt.role, tt.name)
			}
		})
	}
}

func TestIssueRefusesBadIdentities(t *testing.T) {
	ca := newTestCA(t)
	for _, req := range []Request{{Role: RoleNode}, {Role: "root", Name: "x"}, {Role: RoleController, Name: "c"},
		{Role: RoleNode, Name: "a/b"}} {
		if _, err := ca.Issue(req); err == nil {
			t.Errorf("issued a certificate for %+v", req)
		}
	}
}

func TestIssuedIdentityRoundTrips(t *testing.T) {
	ca := newTestCA(t)
	for _, req := range []Request{node1, frontend1, controller, {Role: RoleAdmin, Name: "backup"}} {
		leaf, err := ca.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		p, err := PeerOf(leaf.Cert)
		if err != nil || p != (Peer{req.Role, req.Name}) {
			t.Errorf("PeerOf = %v, %v; want %v", p, err, Peer{req.Role, req.Name})
		}
	}
}

func TestFilesRoundTripAndKeysArePrivate(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "pki")
	ca := newTestCA(t)
	if err := WriteCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	if err := WriteCA(dir, ca); !errors.Is(err, ErrCAExists) {
		t.Errorf("second WriteCA = %v, want ErrCAExists", err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, req := range []Request{node1, frontend1, controller} {
		leaf, err := loaded.Issue(req)
		if err != nil {
			t.Fatal(err)
		}
		cdir, err := WriteLeaf(dir, loaded, leaf)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, cdir)
	}
	wantFiles := map[string][]string{
		"node-n1":     {CACertFile, ClientCertFile, ClientKeyFile, ServerCertFile, ServerKeyFile},
		"frontend-n1": {CACertFile, ClientCertFile, ClientKeyFile},
		"controller":  {CACertFile, ClientCertFile, ClientKeyFile, ServerCertFile, ServerKeyFile},
	}
	for _, cdir := range dirs {
		var names []string
		entries, _ := os.ReadDir(cdir)
		for _, e := range entries {
			names = append(names, e.Name())
		}
		if want := wantFiles[filepath.Base(cdir)]; strings.Join(names, ",") != strings.Join(want, ",") {
			t.Errorf("%s holds %v, want %v", cdir, names, want)
		}
	}
	checkPrivateKeys(t, dir)

	srv, err := Load(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Load(dirs[1])
	if err != nil {
		t.Fatal(err)
	}
	if srv.Self != (Peer{RoleNode, "n1"}) || cli.Self != (Peer{RoleFrontend, "n1"}) {
		t.Errorf("loaded identities %v and %v", srv.Self, cli.Self)
	}
	if sErr, cErr := handshake(srv.ServerConfig(nil), cli.ClientConfig(AllowRoles(RoleNode))); sErr != nil || cErr != nil {
		t.Errorf("handshake with loaded bundles: server %v, client %v", sErr, cErr)
	}
}

// checkPrivateKeys fails the test for any key file under dir that
// anyone but its owner may read, and any directory others may enter.
func checkPrivateKeys(t *testing.T, dir string) {
	t.Helper()
	keys := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && info.Mode().Perm()&0o077 != 0:
			t.Errorf("directory %s has mode %v", path, info.Mode().Perm())
		case strings.HasSuffix(path, "-key.pem"):
			keys++
			if info.Mode().Perm() != 0o600 {
				t.Errorf("key %s has mode %v, want 0600", path, info.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if keys != 1+2+1+2 { // CA, node, frontend, controller
		t.Errorf("found %d key files, want 6", keys)
	}
}
