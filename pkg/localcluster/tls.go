package localcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// Identities the harness itself uses: it plays the controller towards
// node agents started without one, and an operator towards the
// controller and the NBD servers.
var (
	ControllerPeer = certs.Peer{Role: certs.RoleController}
	AdminPeer      = certs.Peer{Role: certs.RoleAdmin, Name: "localcluster"}
)

// TLS is a certificate directory as `trireme certs` writes it, which
// every process of a local cluster gets as --tls-dir.
type TLS struct {
	// Dir is the directory.
	Dir string
	ca  *certs.CA
}

// OpenTLS opens the certificate directory dir, creating it with a new
// cluster CA when it holds none.
func OpenTLS(dir string) (*TLS, error) {
	ca, err := certs.LoadCA(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if ca, err = certs.NewCA("Trireme local cluster CA", 0); err != nil {
			return nil, err
		}
		err = certs.WriteCA(dir, ca)
	}
	if err != nil {
		return nil, fmt.Errorf("certificates in %s: %w", dir, err)
	}
	return &TLS{Dir: dir, ca: ca}, nil
}

// Issue writes a certificate for every peer that has none in the
// directory yet.
func (t *TLS) Issue(peers ...certs.Peer) error {
	for _, p := range peers {
		if _, err := os.Stat(filepath.Join(certs.ComponentDir(t.Dir, p), certs.ClientCertFile)); err == nil {
			continue
		}
		leaf, err := t.ca.Issue(certs.Request{Role: p.Role, Name: p.Name})
		if err != nil {
			return err
		}
		if _, err := certs.WriteLeaf(t.Dir, t.ca, leaf); err != nil {
			return err
		}
	}
	return nil
}

// Bundle returns the certificate of p, issuing it if needed.
func (t *TLS) Bundle(p certs.Peer) (*certs.Bundle, error) {
	if err := t.Issue(p); err != nil {
		return nil, err
	}
	return certs.Load(certs.ComponentDir(t.Dir, p))
}

// DialOption returns the gRPC credentials of a client presenting p's
// certificate to a server of role server.
func (t *TLS) DialOption(p certs.Peer, server certs.Role) (grpc.DialOption, error) {
	b, err := t.Bundle(p)
	if err != nil {
		return nil, err
	}
	return api.ClientCredentials(b, certs.AllowRoles(server)), nil
}

// IssueNode writes the certificates a node agent needs, unless they
// exist: its own, naming ip too for NBD clients that check the server's
// address (qemu, libnbd), and its frontend's.
func (t *TLS) IssueNode(id, ip string) error {
	node := certs.Peer{Role: certs.RoleNode, Name: id}
	if _, err := os.Stat(filepath.Join(certs.ComponentDir(t.Dir, node), certs.ServerCertFile)); err != nil {
		req := certs.Request{Role: certs.RoleNode, Name: id}
		if parsed := net.ParseIP(ip); parsed != nil {
			req.IPs = []net.IP{parsed}
		}
		leaf, err := t.ca.Issue(req)
		if err != nil {
			return err
		}
		if _, err := certs.WriteLeaf(t.Dir, t.ca, leaf); err != nil {
			return err
		}
	}
	return t.Issue(certs.Peer{Role: certs.RoleFrontend, Name: id})
}

// AdminDir is the component directory of the harness's operator
// certificate, which qemu (tls-creds-x509 dir=) and libnbd
// (tls-certificates=) read as it is.
func (t *TLS) AdminDir() string { return certs.ComponentDir(t.Dir, AdminPeer) }
