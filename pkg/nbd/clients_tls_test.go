package nbd

// Tests of NBD_OPT_STARTTLS against the clients Debian ships: qemu-io
// (qemu's tls-creds-x509 object) and nbdinfo (libnbd's nbds:// URIs with
// tls-certificates). Both read a directory holding ca-cert.pem,
// client-cert.pem and client-key.pem, which is how certs.WriteLeaf lays
// out a component's certificate. Both check the server's certificate
// against the host they dial, so the server's names 127.0.0.1.

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/trireme-csi/trireme/pkg/certs"
)

// clientDir writes a client certificate of the CA into a fresh
// directory, as qemu and libnbd read it, and returns the directory.
func clientDir(t *testing.T, ca *certs.CA, req certs.Request) string {
	t.Helper()
	leaf, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := certs.WriteLeaf(t.TempDir(), ca, leaf)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// foreignClientDir is a directory that trusts the CA of pki (so the
// client accepts the server) but holds a client certificate issued by
// other, or none when other is nil.
func foreignClientDir(t *testing.T, pki, other *testPKI) string {
	t.Helper()
	dir := t.TempDir()
	if other != nil {
		dir = clientDir(t, other.ca, certs.Request{Role: certs.RoleAdmin, Name: "backup"})
		os.Remove(filepath.Join(dir, certs.CACertFile))
	}
	if err := os.WriteFile(filepath.Join(dir, certs.CACertFile), pki.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tlsServer serves exports in forced TLS mode with the PKI's node
// certificate and returns the server's host:port.
func tlsServer(t *testing.T, pki *testPKI, exports Exports, authorize func(*x509.Certificate, string) error) string {
	t.Helper()
	opts := pki.tlsOptions()
	opts.Authorize = authorize
	addr, _ := startServer(t, exports, opts)
	return addr
}

// qemuTLSArgs are qemu-io's arguments to open an export over TLS with
// the certificates in dir.
func qemuTLSArgs(addr, export, dir string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{
		"--object", "tls-creds-x509,id=tls0,endpoint=client,dir=" + dir,
		"--image-opts", fmt.Sprintf("driver=nbd,server.type=inet,server.host=%s,server.port=%s,export=%s,tls-creds=tls0",
			host, port, export),
	}
}

func TestQemuIOOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	exp := newMemExport(1 << 20)
	addr := tlsServer(t, pki, memExports{"vol": exp}, nil)
	dir := clientDir(t, pki.ca, certs.Request{Role: certs.RoleFrontend, Name: "n1"})

	args := append(qemuTLSArgs(addr, "vol", dir), "-c", "write -P 0xab 4096 64k", "-c", "read -P 0xab 4096 64k", "-c", "flush")
	mustRun(t, "qemu-io", args...)
	want := make([]byte, 1<<20)
	fillRange(want, 4096, 64<<10, 0xab)
	expectBytes(t, "export after qemu-io over TLS", exp.data(), want)
	exp.checkIntact(t)
}

func TestQemuIOWithoutTheRightCertificateFails(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	exp := newMemExport(1 << 20)
	addr := tlsServer(t, pki, memExports{"vol": exp}, nil)
	tests := []struct {
		name string
		args []string
	}{
		{"plain TCP", []string{"-f", "raw", "nbd://" + addr + "/vol"}},
		{"client and CA certificates of another CA", qemuTLSArgs(addr, "vol",
			clientDir(t, other.ca, certs.Request{Role: certs.RoleFrontend, Name: "n1"}))},
		{"client certificate of another CA", qemuTLSArgs(addr, "vol", foreignClientDir(t, pki, other))},
		{"no client certificate", qemuTLSArgs(addr, "vol", foreignClientDir(t, pki, nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTool(t, "qemu-io", append(tt.args, "-c", "write -P 0xcd 0 4k")...)
			if err == nil {
				t.Fatalf("qemu-io succeeded:\n%s", out)
			}
			t.Logf("qemu-io refused as expected: %v", toolError(err.Error()))
		})
	}
	if n := exp.calls(); n != 0 {
		t.Errorf("export saw %d calls", n)
	}
}

// nbdsURI is libnbd's URI for an export over TLS with the certificates
// in dir.
func nbdsURI(addr, export, dir string) string {
	return "nbds://" + addr + "/" + export + "?tls-certificates=" + dir
}

func TestNbdinfoOverTLS(t *testing.T) {
	pki := newTestPKI(t)
	exports := memExports{"vol-a": newMemExport(4 << 20), "vol-b": newMemExport(1 << 20)}
	addr := tlsServer(t, pki, exports, volumeOfNode(map[string]string{"vol-a": "n1", "vol-b": "n2"}))
	frontend := clientDir(t, pki.ca, certs.Request{Role: certs.RoleFrontend, Name: "n1"})
	admin := clientDir(t, pki.ca, certs.Request{Role: certs.RoleAdmin, Name: "backup"})

	if out := mustRun(t, "nbdinfo", "--size", nbdsURI(addr, "vol-a", frontend)); out != "4194304\n" {
		t.Errorf("nbdinfo --size over TLS: %q", out)
	}
	if out, err := runTool(t, "nbdinfo", "--size", nbdsURI(addr, "vol-b", frontend)); err == nil {
		t.Errorf("frontend of n1 opened vol-b, attached to n2: %q", out)
	}
	listed := func(dir string) []string {
		var list nbdinfoOutput
		out := mustRun(t, "nbdinfo", "--list", "--json", "--no-content", nbdsURI(addr, "", dir))
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range list.Exports {
			names = append(names, e.Name)
		}
		return names
	}
	if got := listed(frontend); !reflect.DeepEqual(got, []string{"vol-a"}) {
		t.Errorf("frontend of n1 lists %q, want only vol-a", got)
	}
	if got := listed(admin); !reflect.DeepEqual(got, []string{"vol-a", "vol-b"}) {
		t.Errorf("admin lists %q, want both", got)
	}
}

func TestNbdinfoWithoutTheRightCertificateSeesNothing(t *testing.T) {
	pki, other := newTestPKI(t), newTestPKI(t)
	addr := tlsServer(t, pki, memExports{"secret-volume": newMemExport(1 << 20)}, nil)
	otherDir := clientDir(t, other.ca, certs.Request{Role: certs.RoleAdmin, Name: "backup"})
	foreign, noCert := foreignClientDir(t, pki, other), foreignClientDir(t, pki, nil)
	tests := []struct {
		name string
		args []string
	}{
		{"plain list", []string{"--list", "nbd://" + addr}},
		{"plain open", []string{"--size", "nbd://" + addr + "/secret-volume"}},
		{"list with another CA's certificate", []string{"--list", nbdsURI(addr, "", otherDir)}},
		{"open with another CA's certificate", []string{"--size", nbdsURI(addr, "secret-volume", otherDir)}},
		{"list with a client certificate of another CA", []string{"--list", nbdsURI(addr, "", foreign)}},
		{"open with a client certificate of another CA", []string{"--size", nbdsURI(addr, "secret-volume", foreign)}},
		{"list without a client certificate", []string{"--list", nbdsURI(addr, "", noCert)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runTool(t, "nbdinfo", tt.args...)
			if err == nil {
				t.Fatalf("nbdinfo succeeded:\n%s", out)
			}
			if strings.Contains(out+err.Error(), "secret-volume") && !strings.Contains(strings.Join(tt.args, " "), "secret-volume") {
				t.Errorf("nbdinfo learned an export name:\n%s\n%v", out, err)
			}
			t.Logf("nbdinfo refused as expected: %v", toolError(err.Error()))
		})
	}
}

// toolError is a failed client's message without its exit status.
func toolError(s string) string {
	_, msg, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.ReplaceAll(msg, "\n", " | ")
}
