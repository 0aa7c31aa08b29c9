package certs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCAWithAPKCS1RSAKey: a CA written as Helm's genCA writes it (an RSA
// key in a PKCS #1 "RSA PRIVATE KEY" block) loads and issues
// certificates that authenticate each other.
func TestCAWithAPKCS1RSAKey(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Trireme cluster CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(CACertFile, "CERTIFICATE", der)
	write(CAKeyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))

	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	server, client := issue(t, ca, node1), issue(t, ca, controller)
	if serr, cerr := handshake(server.ServerConfig(nil), client.ClientConfig(AllowRoles(RoleNode))); serr != nil || cerr != nil {
		t.Fatalf("handshake between certificates of the RSA CA: server %v, client %v", serr, cerr)
	}
}
