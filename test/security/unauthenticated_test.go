package security

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// http2Preface is what a gRPC client sends first over plain TCP.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// TestPlainTCPClientIsRefusedOnEveryPort connects without TLS to every
// port and sends what a client of the port's protocol sends first. The
// TLS ports close the connection without answering; the NBD servers
// answer every option with NBD_REP_ERR_TLS_REQD, name no export, and
// close on NBD_OPT_EXPORT_NAME.
func TestPlainTCPClientIsRefusedOnEveryPort(t *testing.T) {
	s := cluster(t)
	before := s.snapshot(t)
	a := s.volumes["A"]
	for _, p := range s.ports() {
		t.Run(p.String(), func(t *testing.T) {
			c := dialTCP(t, p.addr)
			switch p.kind {
			case controllerAPI, nodeAPI:
				c.Write([]byte(http2Preface))
				expectClosedSilently(t, c)
			case replicationPort:
				epoch := s.locate(t, a.id).GetLayout().GetEpoch()
				c.Write(encode(helloFrame(a.id, p.node, epoch), writeFrame(2, epoch, 0, make([]byte, 4096))))
				expectClosedSilently(t, c)
			case nbdPort:
				expectNBDRequiresTLS(t, c, a.id)
			}
		})
	}
	t.Run("gRPC clients", func(t *testing.T) {
		for _, p := range s.ports() {
			if p.kind == controllerAPI || p.kind == nodeAPI {
				expectGRPCRefused(t, p, grpc.WithTransportCredentials(insecure.NewCredentials()), "")
			}
		}
	})
	s.checkUnchanged(t, before)
}

// expectClosedSilently checks that the server closes c without sending
// a byte: a TLS server given something other than a ClientHello.
func expectClosedSilently(t *testing.T, c net.Conn) {
	t.Helper()
	got, err := readToClose(c, ioTimeout)
	if isTimeout(err) {
		t.Fatalf("the server kept the connection open for %s", ioTimeout)
	}
	if len(got) > 0 {
		t.Fatalf("the server answered %d bytes (%q) before closing", len(got), got)
	}
}

// expectNBDRequiresTLS negotiates in plain text and checks that every
// option but STARTTLS is refused with NBD_REP_ERR_TLS_REQD and carries
// no export name.
func expectNBDRequiresTLS(t *testing.T, c net.Conn, volumeID string) {
	t.Helper()
	n := nbdNegotiate(t, c)
	for _, o := range []struct {
		name    string
		opt     uint32
		payload []byte
	}{
		{"NBD_OPT_LIST", nbdOptList, nil},
		{"NBD_OPT_INFO", nbdOptInfo, nbdGoPayload(volumeID)},
		{"NBD_OPT_GO", nbdOptGo, nbdGoPayload(volumeID)},
	} {
		n.send(t, o.opt, o.payload)
		r, err := n.reply()
		if err != nil {
			t.Fatalf("%s: %v", o.name, err)
		}
		if r.opt != o.opt || r.typ != nbdRepErrTLSReqd {
			t.Errorf("%s: reply type %#x to option %d, want NBD_REP_ERR_TLS_REQD (%#x)", o.name, r.typ, r.opt, uint32(nbdRepErrTLSReqd))
		}
		if bytes.Contains(r.data, []byte(volumeID)) {
			t.Errorf("%s: the refusal names the volume: %q", o.name, r.data)
		}
	}
	n.send(t, nbdOptExportName, []byte(volumeID))
	got, err := readToClose(c, ioTimeout)
	if isTimeout(err) {
		t.Fatal("NBD_OPT_EXPORT_NAME without TLS: the server kept the connection open")
	}
	if len(got) > 0 {
		t.Fatalf("NBD_OPT_EXPORT_NAME without TLS: the server sent %d bytes before closing", len(got))
	}
}

// TestOtherCAClientIsRefusedOnEveryPort presents, on every port, a
// certificate that an unknown CA issued for the identity the port would
// admit, naming the same CA subject as the cluster's. The server refuses
// it in the TLS handshake (a bad_certificate alert); on the NBD port
// that is after NBD_OPT_STARTTLS, before any export is listed.
func TestOtherCAClientIsRefusedOnEveryPort(t *testing.T) {
	s := cluster(t)
	before := s.snapshot(t)
	other := newOtherCA(t)
	for _, p := range s.ports() {
		t.Run(p.String(), func(t *testing.T) {
			cfg := other.clientConfig(t, admittedOn(p))
			c := dialTCP(t, p.addr)
			if p.kind == nbdPort {
				c = nbdNegotiate(t, c).startTLS(t)
			}
			expectTLSAlert(t, tlsRefusal(c, cfg), alertUnknownCA)
		})
	}
	t.Run("gRPC clients", func(t *testing.T) {
		for _, p := range s.ports() {
			if p.kind == controllerAPI || p.kind == nodeAPI {
				cfg := other.clientConfig(t, admittedOn(p))
				expectGRPCRefused(t, p, grpc.WithTransportCredentials(credentials.NewTLS(cfg)), alertUnknownCA)
			}
		}
	})
	s.checkUnchanged(t, before)
}

// admittedOn is the most powerful identity a port admits.
func admittedOn(p port) certs.Peer {
	switch p.kind {
	case controllerAPI:
		return nodePeer("node-a")
	case nodeAPI:
		return localcluster.ControllerPeer
	case replicationPort:
		return nodePeer("node-a")
	default:
		return localcluster.AdminPeer
	}
}

// TLS alerts the servers refuse client certificates with, as Go's
// crypto/tls words them.
const (
	// alertUnknownCA refuses a certificate the cluster CA did not issue.
	alertUnknownCA = "remote error: tls: unknown certificate authority"
	// alertBadCertificate refuses a cluster certificate whose identity
	// the server does not admit.
	alertBadCertificate = "remote error: tls: bad certificate"
)

// expectTLSAlert checks that a handshake failed with the server's alert.
func expectTLSAlert(t *testing.T, err error, alert string) {
	t.Helper()
	if err == nil {
		t.Fatal("the server accepted the handshake")
	}
	if !strings.Contains(err.Error(), alert) {
		t.Fatalf("handshake failed with %v, want the server's alert %q", err, alert)
	}
}

// expectGRPCRefused calls a read-only method of a gRPC port through a
// real gRPC client, and checks that it fails as UNAVAILABLE, the code of
// a failed connection, with a message containing want (the server's
// alert), or saying that the server closed the connection before the
// client read the alert.
func expectGRPCRefused(t *testing.T, p port, creds grpc.DialOption, want string) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+p.addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if p.kind == controllerAPI {
		_, err = apiv1.NewRegistryClient(conn).LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: "x"})
	} else {
		_, err = apiv1.NewNodeClient(conn).ListVolumes(ctx, &apiv1.ListVolumesRequest{})
	}
	if err == nil {
		t.Errorf("%s: the call succeeded", p)
		return
	}
	closed := strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "connection reset")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) && !closed {
		t.Errorf("%s: %v, want code Unavailable with %q", p, err, want)
	}
}
