package main

import (
	"errors"
	"flag"
	"fmt"
	"net"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/csi"
)

// securityFlags are the flags that choose between mutual TLS and the
// insecure mode. Exactly one of --tls-dir and --insecure must be given:
// a process never falls back to plain TCP on its own.
type securityFlags struct {
	tlsDir   string
	insecure bool
}

func addSecurityFlags(fs *flag.FlagSet) *securityFlags {
	s := &securityFlags{}
	fs.StringVar(&s.tlsDir, "tls-dir", "", "certificate directory as `trireme certs` writes it; every connection uses mutual TLS with the component certificate found there")
	fs.BoolVar(&s.insecure, "insecure", false, "use no TLS at all: anyone who reaches a port can read and change volumes (tests and demos only)")
	return s
}

// errNoSecurityMode is returned when neither --tls-dir nor --insecure was
// given.
var errNoSecurityMode = errors.New("pass --tls-dir DIR (mutual TLS with the certificates of `trireme certs`) or --insecure (no TLS, for tests only)")

// check says whether exactly one mode was chosen.
func (s *securityFlags) check() error {
	switch {
	case s.tlsDir != "" && s.insecure:
		return errors.New("--tls-dir and --insecure exclude each other")
	case s.tlsDir == "" && !s.insecure:
		return errNoSecurityMode
	}
	return nil
}

// checkCSIEndpoint refuses a tcp:// CSI endpoint unless security is off:
// the CSI services authenticate nobody, and rely on the unix socket's
// mode 0600 to be reached by the pod's sidecars and kubelet alone.
func (s *securityFlags) checkCSIEndpoint(flag, endpoint string) error {
	if endpoint == "" || s.insecure {
		return nil
	}
	network, _, err := csi.ParseEndpoint(endpoint)
	if err != nil {
		return err
	}
	if network != "unix" {
		return fmt.Errorf("--%s %s would serve CSI over TCP to anyone who reaches it, with no authentication: use a unix:///path socket (as the sidecars and the kubelet do), or --insecure", flag, endpoint)
	}
	return nil
}

// load returns the bundle of the component identity want, read from its
// directory under --tls-dir, or nil in insecure mode, which it logs as a
// warning. The certificate must name want exactly.
func (s *securityFlags) load(component string, want certs.Peer) (*certs.Bundle, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if s.insecure {
		klog.InfoS("WARNING: running without TLS (--insecure): connections are neither authenticated nor encrypted, "+
			"and anyone who reaches a port can read, write and delete volumes", "component", component)
		return nil, nil
	}
	dir := certs.ComponentDir(s.tlsDir, want)
	b, err := certs.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("--tls-dir: %w (issue it with `trireme certs --dir %s`)", err, s.tlsDir)
	}
	if b.Self != want {
		return nil, fmt.Errorf("--tls-dir: %s holds a certificate for %s, want %s", dir, b.Self, want)
	}
	return b, nil
}

// listenFlags hold the check of a server's listen address.
type listenFlags struct {
	allowAll bool
}

func addListenFlags(fs *flag.FlagSet) *listenFlags {
	l := &listenFlags{}
	fs.BoolVar(&l.allowAll, "allow-all-interfaces", false, "allow --listen-address to be 0.0.0.0 or ::, every interface of the host")
	return l
}

// check refuses an address that is not an IP, and every interface unless
// --allow-all-interfaces: a server should listen on its node's own
// address only.
func (l *listenFlags) check(addr string) error {
	ip := net.ParseIP(addr)
	switch {
	case ip == nil:
		return fmt.Errorf("--listen-address %q is not an IP address", addr)
	case ip.IsUnspecified() && !l.allowAll:
		return fmt.Errorf("--listen-address %s listens on every interface of the host; pass the node's own address (the pod's IP), or --allow-all-interfaces", addr)
	}
	return nil
}

// nodeSecurity loads a node agent's certificates: the node's own, and
// the frontend's when the agent serves CSI (the frontend is the NBD
// client that presents attached volumes). Nil in insecure mode.
func nodeSecurity(s *securityFlags, nodeID string, frontend bool) (*agent.Security, error) {
	if nodeID == "" {
		return nil, errors.New("--node-id (or env NODE_NAME) is required")
	}
	node, err := s.load("node", certs.Peer{Role: certs.RoleNode, Name: nodeID})
	if node == nil || err != nil {
		return nil, err
	}
	sec := &agent.Security{Node: node}
	if frontend {
		if sec.Frontend, err = s.load("frontend", certs.Peer{Role: certs.RoleFrontend, Name: nodeID}); err != nil {
			return nil, err
		}
	}
	return sec, nil
}

// nodeDialer returns how the controller dials node agents: presenting
// the controller's certificate and accepting only the certificate of the
// node it means to reach, so that a node registering another's API
// address gets nothing sent there.
func nodeDialer(b *certs.Bundle) controller.NodeDialer {
	return func(nodeID, addr string) (apiv1.NodeClient, error) {
		want := certs.Peer{Role: certs.RoleNode, Name: nodeID}
		return api.DialNode(addr, api.ClientCredentials(b, certs.AllowPeer(want)))
	}
}
