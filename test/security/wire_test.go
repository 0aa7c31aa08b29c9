package security

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// portKind is the protocol a port speaks.
type portKind int

const (
	controllerAPI   portKind = iota // gRPC, TLS from the first byte
	nodeAPI                         // gRPC, TLS from the first byte
	replicationPort                 // replication frames, TLS from the first byte
	nbdPort                         // NBD, TLS after NBD_OPT_STARTTLS
)

func (k portKind) String() string {
	return [...]string{"controller API", "node API", "replication", "NBD"}[k]
}

// port is one listening port of the cluster.
type port struct {
	kind portKind
	node string // empty for the controller
	addr string
}

func (p port) String() string {
	if p.node == "" {
		return fmt.Sprintf("%s %s", p.kind, p.addr)
	}
	return fmt.Sprintf("%s of %s %s", p.kind, p.node, p.addr)
}

// ports lists every TCP port the cluster listens on.
func (s *system) ports() []port {
	ps := []port{{kind: controllerAPI, addr: s.Controller.APIAddress}}
	for _, n := range s.Nodes {
		ps = append(ps, port{nodeAPI, n.ID, n.APIAddress}, port{replicationPort, n.ID, n.ReplicationAddr},
			port{nbdPort, n.ID, n.NBDAddress})
	}
	return ps
}

// ioTimeout bounds one exchange with a server that answers at once.
const ioTimeout = 10 * time.Second

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readToClose reads until the server closes the connection or timeout
// passes, and returns what it read and the error that ended the reads
// (io.EOF or a reset when the server closed, a timeout otherwise).
func readToClose(c net.Conn, timeout time.Duration) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(timeout))
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			return got.Bytes(), err
		}
	}
}

// isTimeout reports whether err is a deadline passing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// tlsRefusal runs a TLS handshake over c and reads once, and returns the
// error: a TLS 1.3 server checks the client's certificate after the
// client has finished its side, so a refusal arrives as an alert on the
// first read. Any byte read is returned as an error too.
func tlsRefusal(c net.Conn, cfg *tls.Config) error {
	tc := tls.Client(c, cfg)
	c.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		return err
	}
	var b [1]byte
	n, err := tc.Read(b[:])
	if n > 0 {
		return fmt.Errorf("read %d bytes of application data after the handshake", n)
	}
	return err
}

// clientHello returns the bytes of a TLS ClientHello record, as a client
// of the cluster sends first.
func clientHello(t *testing.T) []byte {
	t.Helper()
	client, server := net.Pipe()
	defer server.Close()
	go func() {
		defer client.Close()
		tls.Client(client, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}).Handshake()
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(server, hdr[:]); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
	copy(rec, hdr[:])
	if _, err := io.ReadFull(server, rec[5:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

// NBD negotiation, client side, as the NBD protocol specification
// describes it.
const (
	nbdOptExportName = 1
	nbdOptList       = 3
	nbdOptStartTLS   = 5
	nbdOptInfo       = 6
	nbdOptGo         = nbdwire.OptGo

	nbdRepServer     = 2
	nbdRepErrUnsup   = nbdwire.RepErrBit | 1
	nbdRepErrTLSReqd = nbdwire.RepErrBit | 5

	nbdGreetingSize = 18
)

// nbdConn is a raw NBD client connection in negotiation.
type nbdConn struct {
	c  net.Conn
	br *bufio.Reader
}

// nbdNegotiate reads the server's greeting on c and answers with the
// fixed-newstyle client flags.
func nbdNegotiate(t *testing.T, c net.Conn) *nbdConn {
	t.Helper()
	n := &nbdConn{c: c, br: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(ioTimeout))
	var g [nbdGreetingSize]byte
	if _, err := io.ReadFull(n.br, g[:]); err != nil {
		t.Fatalf("read NBD greeting: %v", err)
	}
	if binary.BigEndian.Uint64(g[:]) != nbdwire.MagicInit || binary.BigEndian.Uint64(g[8:]) != nbdwire.MagicOption {
		t.Fatalf("not an NBD greeting: %x", g)
	}
	flags := uint32(nbdwire.FlagFixedNewstyle | nbdwire.FlagNoZeroes)
	if _, err := c.Write(binary.BigEndian.AppendUint32(nil, flags)); err != nil {
		t.Fatal(err)
	}
	return n
}

// nbdOption encodes one option.
func nbdOption(opt uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// nbdGoPayload is the payload of NBD_OPT_GO and NBD_OPT_INFO for an
// export, asking for no particular information.
func nbdGoPayload(name string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	return binary.BigEndian.AppendUint16(b, 0)
}

// send writes an option.
func (n *nbdConn) send(t *testing.T, opt uint32, payload []byte) {
	t.Helper()
	if _, err := n.c.Write(nbdOption(opt, payload)); err != nil {
		t.Fatalf("send NBD option %d: %v", opt, err)
	}
}

// nbdReply is one option reply.
type nbdReply struct {
	opt, typ uint32
	data     []byte
}

// reply reads one option reply.
func (n *nbdConn) reply() (nbdReply, error) {
	var h [20]byte
	if _, err := io.ReadFull(n.br, h[:]); err != nil {
		return nbdReply{}, err
	}
	if binary.BigEndian.Uint64(h[:]) != nbdwire.MagicOptionReply {
		return nbdReply{}, fmt.Errorf("bad option reply magic %x", h[:8])
	}
	r := nbdReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	_, err := io.ReadFull(n.br, r.data)
	return r, err
}

// startTLS sends NBD_OPT_STARTTLS, expects the server's acknowledgement
// and returns the connection to run the TLS handshake on.
func (n *nbdConn) startTLS(t *testing.T) net.Conn {
	t.Helper()
	n.send(t, nbdOptStartTLS, nil)
	r, err := n.reply()
	if err != nil || r.typ != nbdwire.RepAck {
		t.Fatalf("NBD_OPT_STARTTLS: reply %d, %v; want an acknowledgement", r.typ, err)
	}
	if n.br.Buffered() > 0 {
		t.Fatal("the server sent data before the TLS handshake")
	}
	return n.c
}

// Replication frames, built with the replication package's own encoder.

// helloFrame binds a replication connection to a volume on node, at
// epoch. The payload is "<volume id>\x00<node id>" (see wire.go).
func helloFrame(volumeID, node string, epoch uint64) replication.Frame {
	return replication.Frame{Op: replication.OpHello, ID: 1, Epoch: epoch,
		Payload: []byte(volumeID + "\x00" + node)}
}

// writeFrame writes data at off.
func writeFrame(id, epoch uint64, off int64, data []byte) replication.Frame {
	return replication.Frame{Op: replication.OpWrite, Flags: replication.FlagFUA, ID: id, Epoch: epoch,
		Offset: uint64(off), Length: uint32(len(data)), Payload: data}
}

// encode returns the bytes of frames, as a capture of the stream holds
// them.
func encode(frames ...replication.Frame) []byte {
	var b bytes.Buffer
	for _, f := range frames {
		f.WriteTo(&b)
	}
	return b.Bytes()
}

// dialReplication connects to a replication port with cfg and completes
// the handshake.
func dialReplication(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := tlsDial(addr, cfg)
	if err != nil {
		t.Fatalf("connect to replication %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// tlsDial connects to addr and completes a TLS handshake with cfg.
func tlsDial(addr string, cfg *tls.Config) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}
