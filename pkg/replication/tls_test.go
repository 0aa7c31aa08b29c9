package replication

// The replication protocol under mutual TLS: the server takes a
// tls.NewListener, the primary a *tls.Dialer, and nothing else changes.
// A peer without a node certificate of the cluster CA must not get a
// hello through, since a hello with a high epoch would lock the replica
// out of its own primary.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/certs"
)

// issueBundle returns a certificate of ca for req.
func issueBundle(t testing.TB, ca *certs.CA, req certs.Request) *certs.Bundle {
	t.Helper()
	leaf, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.NewBundle(ca, leaf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startTLSNode starts node id on ip, serving replication only to node
// certificates of ca.
func startTLSNode(t testing.TB, ca *certs.CA, id, ip string) *testNode {
	t.Helper()
	bundle := issueBundle(t, ca, certs.Request{Role: certs.RoleNode, Name: id, IPs: []net.IP{net.ParseIP(ip)}})
	n := &testNode{id: id, zone: "zone-" + id, dir: t.TempDir(), replicas: map[string]*blockstore.Replica{}}
	lis, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	n.lis, n.addr = lis, lis.Addr().String()
	n.srv = NewServer(n, ServerOptions{NodeID: id, HelloTimeout: 2 * time.Second})
	go n.srv.Serve(tls.NewListener(lis, bundle.ServerConfig(certs.AllowRoles(certs.RoleNode))))
	t.Cleanup(n.stop)
	return n
}

// nodeDialer dials replicas as node id, accepting only the node named
// want at the other end.
func nodeDialer(t testing.TB, ca *certs.CA, id, want string) Dialer {
	b := issueBundle(t, ca, certs.Request{Role: certs.RoleNode, Name: id})
	return &tls.Dialer{Config: b.ClientConfig(certs.AllowPeer(certs.Peer{Role: certs.RoleNode, Name: want}))}
}

func TestReplicationOverMutualTLS(t *testing.T) {
	ca, err := certs.NewCA("replication test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := startNode(t, "a", "zone-a", "127.0.0.1")
	b := startTLSNode(t, ca, "b", "127.0.0.2")
	const size = 1 << 20
	rb := b.create(t, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), b.info(InSync))
	p := startPrimary(t, a.create(t, vol, size), l, PrimaryOptions{NodeID: "a", Dialer: nodeDialer(t, ca, "a", "b")})

	data := bytes.Repeat([]byte("tls!"), 16<<10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WriteAt(ctx, data, 4096, true); err != nil {
		t.Fatalf("write through a TLS link: %v", err)
	}
	got := make([]byte, len(data))
	if err := rb.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replica b after the write: %v, equal %v", err, bytes.Equal(got, data))
	}
}

func TestReplicationTLSRefusesOtherPeers(t *testing.T) {
	ca, err := certs.NewCA("replication test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := startTLSNode(t, ca, "b", "127.0.0.2")
	rb := b.create(t, vol, 1<<20)
	if err := rb.ObserveEpoch(3); err != nil {
		t.Fatal(err)
	}
	trustAny := func(bundle *certs.Bundle) *tls.Config {
		cfg := bundle.ClientConfig(nil)
		cfg.VerifyConnection = nil // the attacker trusts any server
		return cfg
	}
	tests := []struct {
		name string
		tls  *tls.Config // nil: plain TCP
	}{
		{"plain TCP", nil},
		{"node certificate of another CA", trustAny(issueBundle(t, other, certs.Request{Role: certs.RoleNode, Name: "a"}))},
		{"frontend certificate of the cluster CA", trustAny(issueBundle(t, ca, certs.Request{Role: certs.RoleFrontend, Name: "a"}))},
		{"admin certificate of the cluster CA", trustAny(issueBundle(t, ca, certs.Request{Role: certs.RoleAdmin, Name: "x"}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c net.Conn
			var err error
			d := &net.Dialer{Timeout: 5 * time.Second}
			if tt.tls == nil {
				c, err = d.Dial("tcp", b.addr)
			} else {
				c, err = tls.DialWithDialer(d, "tcp", b.addr, tt.tls)
			}
			if err != nil {
				t.Logf("refused at connection: %v", err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			f := hello(99)
			if _, err := f.WriteTo(c); err != nil {
				t.Logf("refused at hello: %v", err)
			} else if reply, err := ReadFrame(bufio.NewReader(c)); err == nil {
				t.Errorf("server answered a hello: status %d", reply.Status)
			}
		})
	}
	if e := rb.Epoch(); e != 3 {
		t.Errorf("replica epoch %d after the attempts, want 3: a refused peer raised it", e)
	}
}

func TestReplicationTLSHandshakeIsUnderTheHelloTimeout(t *testing.T) {
	ca, err := certs.NewCA("replication test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := startTLSNode(t, ca, "b", "127.0.0.2") // hello timeout 2s
	c, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte{0x16, 0x03}) // the start of a ClientHello, then silence
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("server answered half a ClientHello")
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("server held a stalled TLS handshake for %v, hello timeout 2s", d)
	}
}
