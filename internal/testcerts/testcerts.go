// Package testcerts issues throwaway certificates for tests: a cluster
// CA per test, component bundles, and RPC contexts carrying a client
// certificate as a TLS connection would.
package testcerts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/trireme-csi/trireme/pkg/certs"
)

// CA returns a new cluster CA valid for an hour.
func CA(t testing.TB) *certs.CA {
	t.Helper()
	ca, err := certs.NewCA("test CA "+t.Name(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// Bundle issues a certificate of ca for p and returns its bundle.
func Bundle(t testing.TB, ca *certs.CA, p certs.Peer) *certs.Bundle {
	t.Helper()
	leaf, err := ca.Issue(certs.Request{Role: p.Role, Name: p.Name})
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.NewBundle(ca, leaf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Write issues certificates of ca for every peer into a certificate
// directory dir, as `trireme certs` lays it out, with the CA.
func Write(t testing.TB, dir string, ca *certs.CA, peers ...certs.Peer) {
	t.Helper()
	if err := certs.WriteCA(dir, ca); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		leaf, err := ca.Issue(certs.Request{Role: p.Role, Name: p.Name})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := certs.WriteLeaf(dir, ca, leaf); err != nil {
			t.Fatal(err)
		}
	}
}

// Caller returns a context of an RPC whose client presented cert over
// TLS; a nil cert gives a TLS connection without one.
func Caller(cert *x509.Certificate) context.Context {
	var state tls.ConnectionState
	if cert != nil {
		state.PeerCertificates = []*x509.Certificate{cert}
	}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: state}})
}

// Leaf returns the certificate of a bundle.
func Leaf(b *certs.Bundle) *x509.Certificate { return b.Cert.Leaf }
