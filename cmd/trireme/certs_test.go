package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trireme-csi/trireme/pkg/certs"
)

func TestCertsCommandIssuesLoadableCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	var out bytes.Buffer
	for _, args := range [][]string{
		{"--ca"},
		{"--node", "n1", "--ip", "127.0.0.11", "--dns", "n1.local"},
		{"--controller", "--ip", "127.0.0.1"},
		{"--frontend", "n1"},
		{"--admin", "backup"},
	} {
		if err := run(append([]string{"certs", "--dir", dir}, args...), &out, &out); err != nil {
			t.Fatalf("certs %q: %v\n%s", args, err, out.String())
		}
	}
	for sub, want := range map[string]certs.Peer{
		"node-n1":      {Role: certs.RoleNode, Name: "n1"},
		"controller":   {Role: certs.RoleController},
		"frontend-n1":  {Role: certs.RoleFrontend, Name: "n1"},
		"admin-backup": {Role: certs.RoleAdmin, Name: "backup"},
	} {
		b, err := certs.Load(filepath.Join(dir, sub))
		if err != nil {
			t.Fatalf("load %s: %v", sub, err)
		}
		if b.Self != want {
			t.Errorf("%s names %v, want %v", sub, b.Self, want)
		}
	}
	node, _ := certs.Load(filepath.Join(dir, "node-n1"))
	if ips := node.Cert.Leaf.IPAddresses; len(ips) != 1 || ips[0].String() != "127.0.0.11" {
		t.Errorf("node certificate IPs %v", ips)
	}
	if dns := node.Cert.Leaf.DNSNames; len(dns) != 1 || dns[0] != "n1.local" {
		t.Errorf("node certificate DNS names %v", dns)
	}
	for _, key := range []string{"ca-key.pem", "node-n1/server-key.pem", "frontend-n1/client-key.pem"} {
		info, err := os.Stat(filepath.Join(dir, key))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", key, err, info.Mode().Perm())
		}
	}
}

func TestCertsCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"certs", "--dir", dir, "--ca"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"certs", "--dir", dir, "--ca"}, "already exists"},
		{[]string{"certs", "--dir", dir}, "exactly one"},
		{[]string{"certs", "--dir", dir, "--node", "n1", "--controller"}, "exactly one"},
		{[]string{"certs", "--dir", dir, "--node", "n1", "--ip", "nope"}, "not an IP"},
		{[]string{"certs", "--dir", dir, "--node", "a/b"}, "character"},
		{[]string{"certs", "--node", "n1"}, "--dir is required"},
		{[]string{"certs", "--dir", filepath.Join(dir, "none"), "--node", "n1"}, "create it with --ca"},
	}
	for _, tt := range tests {
		out.Reset()
		err := run(tt.args, &out, &out)
		if err == nil {
			t.Errorf("%q succeeded", tt.args)
			continue
		}
		if msg := err.Error() + out.String(); !strings.Contains(msg, tt.want) {
			t.Errorf("%q: %v\n%s\nwant %q", tt.args, err, out.String(), tt.want)
		}
	}
}

// TestCertsCommandReadsTheCAFromCADir: issuing with --ca-dir leaves the
// CA key where it is, out of the directory that receives the
// certificates, as a pod's init container issues from a mounted Secret.
func TestCertsCommandReadsTheCAFromCADir(t *testing.T) {
	caDir, out := filepath.Join(t.TempDir(), "ca"), filepath.Join(t.TempDir(), "tls")
	var buf bytes.Buffer
	if err := run([]string{"certs", "--dir", caDir, "--ca"}, &buf, &buf); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--node", "n1"}, {"--frontend", "n1"}} {
		if err := run(append([]string{"certs", "--dir", out, "--ca-dir", caDir}, args...), &buf, &buf); err != nil {
			t.Fatalf("certs %q: %v\n%s", args, err, buf.String())
		}
	}
	for _, sub := range []string{"node-n1", "frontend-n1"} {
		if _, err := certs.Load(filepath.Join(out, sub)); err != nil {
			t.Errorf("load %s: %v", sub, err)
		}
	}
	if err := filepath.WalkDir(out, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == certs.CAKeyFile {
			t.Errorf("the CA key was copied to %s", path)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{"certs", "--dir", out, "--ca-dir", caDir, "--ca"}, &buf, &buf); err == nil {
		t.Error("--ca with --ca-dir succeeded")
	}
}
