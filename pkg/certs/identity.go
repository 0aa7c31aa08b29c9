// Package certs issues and checks the certificates Trireme's components
// authenticate each other with: a cluster CA, and leaf certificates that
// name their holder's role (and node) in a URI SAN such as
// trireme://node/n1, so that a server can decide what a peer may do from
// its certificate alone.
package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role is what a certificate's holder is in the cluster.
type Role string

// The roles a certificate can name.
const (
	// RoleController is the controller; it has no name.
	RoleController Role = "controller"
	// RoleNode is a node agent's data and replication servers, and the
	// node agent as a client of the controller and of other nodes.
	RoleNode Role = "node"
	// RoleFrontend is the NBD client that presents volumes to a node's
	// kernel; its name is the node it runs on.
	RoleFrontend Role = "frontend"
	// RoleAdmin is an operator's tool (backups, qemu-img, nbdcopy).
	RoleAdmin Role = "admin"
)

// URIScheme is the scheme of identity URIs.
const URIScheme = "trireme"

// maxNameLength bounds a node or admin name, as Kubernetes bounds node
// names.
const maxNameLength = 253

// Errors of identity parsing. Compare with errors.Is.
var (
	ErrNoIdentity       = errors.New("certificate names no trireme identity")
	ErrManyIdentities   = errors.New("certificate names more than one trireme identity")
	ErrBadIdentity      = errors.New("malformed trireme identity")
	ErrUnknownRole      = errors.New("unknown trireme role")
	ErrWrongPeer        = errors.New("peer identity not allowed")
	ErrNotIssuedByCA    = errors.New("certificate not issued by the cluster CA")
	ErrCAExists         = errors.New("a CA already exists in the directory")
	ErrMissingComponent = errors.New("no certificate in the directory")
)

// URI returns the identity URI of a role and name. The controller's has
// no name; every other role's must have one.
func URI(role Role, name string) (*url.URL, error) {
	if err := checkName(role, name); err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: URIScheme, Host: string(role)}
	if name != "" {
		u.Path = "/" + name
	}
	return u, nil
}

// Identity returns the role and name a certificate's trireme URI SAN
// names. It does not check who issued the certificate: the TLS handshake
// does that, against the cluster CA.
func Identity(cert *x509.Certificate) (Role, string, error) {
	var found *url.URL
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		if found != nil {
			return "", "", ErrManyIdentities
		}
		found = u
	}
	if found == nil {
		return "", "", ErrNoIdentity
	}
	return parseURI(found)
}

// parseURI checks an identity URI and splits it into role and name.
func parseURI(u *url.URL) (Role, string, error) {
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", fmt.Errorf("%w: %q", ErrBadIdentity, u)
	}
	role := Role(u.Host)
	name := strings.TrimPrefix(u.Path, "/")
	if u.Path != "" && !strings.HasPrefix(u.Path, "/") {
		return "", "", fmt.Errorf("%w: %q", ErrBadIdentity, u)
	}
	if err := checkName(role, name); err != nil {
		return "", "", fmt.Errorf("%q: %w", u, err)
	}
	// One spelling per identity: no percent-encoding, no empty parts.
	if canonical, _ := URI(role, name); u.String() != canonical.String() {
		return "", "", fmt.Errorf("%w: %q is not written as %q", ErrBadIdentity, u, canonical)
	}
	return role, name, nil
}

// checkName checks that a name suits its role: none for the controller,
// a non-empty name of letters, digits, '-', '_' and '.' for the others.
func checkName(role Role, name string) error {
	switch role {
	case RoleController:
		if name != "" {
			return fmt.Errorf("%w: the controller has no name, got %q", ErrBadIdentity, name)
		}
		return nil
	case RoleNode, RoleFrontend, RoleAdmin:
	default:
		return fmt.Errorf("%w: %q", ErrUnknownRole, role)
	}
	if name == "" || len(name) > maxNameLength {
		return fmt.Errorf("%w: %s name must have 1 to %d characters", ErrBadIdentity, role, maxNameLength)
	}
	for _, r := range name {
		if !nameChar(r) {
			return fmt.Errorf("%w: %s name %q has character %q", ErrBadIdentity, role, name, r)
		}
	}
	return nil
}

// nameChar reports whether r may appear in a name.
func nameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
		r == '-' || r == '_' || r == '.'
}

// Peer is an authenticated peer's identity.
type Peer struct {
	Role Role
	Name string
}

// String returns the identity as its URI.
func (p Peer) String() string {
	if p.Name == "" {
		return URIScheme + "://" + string(p.Role)
	}
	return URIScheme + "://" + string(p.Role) + "/" + p.Name
}

// PeerOf returns the identity of a verified certificate.
func PeerOf(cert *x509.Certificate) (Peer, error) {
	role, name, err := Identity(cert)
	return Peer{Role: role, Name: name}, err
}

// AllowRoles returns a peer check admitting any peer of the given roles.
func AllowRoles(roles ...Role) func(Peer) error {
	return func(p Peer) error {
		for _, r := range roles {
			if p.Role == r {
				return nil
			}
		}
		return fmt.Errorf("%w: %s", ErrWrongPeer, p)
	}
}

// AllowPeer returns a peer check admitting exactly one identity.
func AllowPeer(want Peer) func(Peer) error {
	return func(p Peer) error {
		if p != want {
			return fmt.Errorf("%w: %s, want %s", ErrWrongPeer, p, want)
		}
		return nil
	}
}
