package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Bundle is what one component needs to speak mutual TLS: the cluster
// CA to verify peers with, and its own certificate.
type Bundle struct {
	// Roots holds the cluster CA.
	Roots *x509.CertPool
	// Cert is the component's certificate and key.
	Cert tls.Certificate
	// Self is the identity Cert names.
	Self Peer
}

// NewBundle returns the bundle of an issued leaf.
func NewBundle(ca *CA, leaf *Leaf) (*Bundle, error) {
	self, err := PeerOf(leaf.Cert)
	if err != nil {
		return nil, err
	}
	return &Bundle{Roots: ca.Pool(), Cert: leaf.TLSCertificate(), Self: self}, nil
}

// ServerConfig returns a TLS 1.3 server configuration that requires a
// client certificate issued by the cluster CA and naming an identity
// that allow admits (any identity when allow is nil).
func (b *Bundle) ServerConfig(allow func(Peer) error) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    b.Roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return checkPeer(cs.PeerCertificates, allow)
		},
	}
}

// ClientConfig returns a TLS 1.3 client configuration that presents the
// bundle's certificate and accepts a server whose certificate the cluster
// CA issued for an identity allow admits. Servers are recognised by that
// identity, not by host name: the address a client dials (a pod IP, a
// Service) need not be in the certificate. A nil allow admits any
// server certificate the CA issued for serving.
func (b *Bundle) ClientConfig(allow func(Peer) error) *tls.Config {
	roots := b.Roots
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.Cert},
		// The chain is verified below, against the cluster CA only;
		// skipping the default check skips only the host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			return checkPeer(cs.PeerCertificates, allow)
		},
	}
}

// verifyChain checks that certs is a chain the cluster CA issued, valid
// now, for the given use.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, use x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return ErrNoIdentity
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{use},
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotIssuedByCA, err)
	}
	return nil
}

// checkPeer admits the identity of a verified chain's leaf.
func checkPeer(certs []*x509.Certificate, allow func(Peer) error) error {
	if len(certs) == 0 {
		return ErrNoIdentity
	}
	p, err := PeerOf(certs[0])
	if err != nil {
		return err
	}
	if allow == nil {
		return nil
	}
	return allow(p)
}

// PeerFromState returns the identity of a TLS connection's verified peer.
func PeerFromState(cs tls.ConnectionState) (Peer, error) {
	if len(cs.PeerCertificates) == 0 {
		return Peer{}, errors.New("peer presented no certificate")
	}
	return PeerOf(cs.PeerCertificates[0])
}
