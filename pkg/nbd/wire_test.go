package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// ioTimeout bounds every read a test client makes, so that a server bug
// fails a test instead of hanging it.
const ioTimeout = 5 * time.Second

// testClient speaks the client side of NBD byte by byte.
type testClient struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

// startServer serves exports on 127.0.0.1 and closes the server when the
// test ends, checking that Serve returned ErrServerClosed.
func startServer(t testing.TB, exports Exports, opts Options) (string, *Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(exports, opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String(), s
}

// servePair connects a test client to s.ServeConn over loopback TCP and
// returns the client and a channel that yields ServeConn's result.
func servePair(t testing.TB, s *Server) (*testClient, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeConn(sc) }()
	c := &testClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	t.Cleanup(func() { nc.Close() })
	return c, done
}

// waitServeConn returns ServeConn's result or fails the test.
func waitServeConn(t testing.TB, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(ioTimeout):
		t.Fatal("ServeConn did not return")
		return nil
	}
}

// dial connects a test client to addr.
func dial(t testing.TB, addr string) *testClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &testClient{t: t, nc: nc, br: bufio.NewReader(nc)}
}

// read reads exactly n bytes.
func (c *testClient) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// write sends b.
func (c *testClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expectClosed fails the test unless the server closes the connection
// without sending anything more.
func (c *testClient) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("server sent %#x, want connection closed", b)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("read: %v, want EOF", err)
	}
}

// isReset reports a connection reset by the server.
func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// handshake reads the greeting and answers with client flags.
func (c *testClient) handshake(flags uint32) {
	c.t.Helper()
	g := c.read(greetingSize)
	if binary.BigEndian.Uint64(g) != nbdwire.MagicInit || binary.BigEndian.Uint64(g[8:]) != nbdwire.MagicOption {
		c.t.Fatalf("bad greeting %x", g)
	}
	c.write(binary.BigEndian.AppendUint32(nil, flags))
}

// sendOption sends one option.
func (c *testClient) sendOption(option uint32, payload []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption)
	b = binary.BigEndian.AppendUint32(b, option)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	c.write(append(b, payload...))
}

// optionReply is one decoded option reply.
type optionReply struct {
	option uint32
	typ    uint32
	data   []byte
}

// readOptionReply reads one option reply.
func (c *testClient) readOptionReply() optionReply {
	c.t.Helper()
	h := c.read(optionReplyHeader)
	if m := binary.BigEndian.Uint64(h); m != nbdwire.MagicOptionReply {
		c.t.Fatalf("option reply magic %#x", m)
	}
	r := optionReply{
		option: binary.BigEndian.Uint32(h[8:]),
		typ:    binary.BigEndian.Uint32(h[12:]),
	}
	r.data = c.read(int(binary.BigEndian.Uint32(h[16:])))
	return r
}

// readOptionReplies reads replies up to and including a final one.
func (c *testClient) readOptionReplies() []optionReply {
	c.t.Helper()
	var rs []optionReply
	for {
		r := c.readOptionReply()
		rs = append(rs, r)
		if r.typ != nbdwire.RepInfo && r.typ != repServer {
			return rs
		}
	}
}

// infoPayload builds the payload of NBD_OPT_INFO and NBD_OPT_GO.
func infoPayload(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// connect runs the handshake and NBD_OPT_GO for name.
func (c *testClient) connect(name string) {
	c.t.Helper()
	c.handshake(clientFixedNewstyle | clientNoZeroes)
	c.sendOption(nbdwire.OptGo, infoPayload(name, nbdwire.InfoBlockSize))
	rs := c.readOptionReplies()
	if last := rs[len(rs)-1]; last.typ != nbdwire.RepAck {
		c.t.Fatalf("NBD_OPT_GO %q: reply type %#x", name, last.typ)
	}
}

// send sends one transmission request.
func (c *testClient) send(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint32(nil, nbdwire.MagicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	c.write(append(b, payload...))
}

// readReply reads a simple reply header.
func (c *testClient) readReply() (errno uint32, handle uint64) {
	c.t.Helper()
	h := c.read(replyHeaderSize)
	if m := binary.BigEndian.Uint32(h); m != nbdwire.MagicSimpleReply {
		c.t.Fatalf("reply magic %#x", m)
	}
	return binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
}

// expectReply reads a reply and checks its handle and error.
func (c *testClient) expectReply(handle uint64, errno uint32) {
	c.t.Helper()
	gotErrno, gotHandle := c.readReply()
	if gotHandle != handle || gotErrno != errno {
		c.t.Fatalf("reply (handle %d, errno %d), want (handle %d, errno %d)",
			gotHandle, gotErrno, handle, errno)
	}
}

// readAt reads through the server and returns the data.
func (c *testClient) readAt(handle, off uint64, length uint32) []byte {
	c.t.Helper()
	c.send(nbdwire.CmdRead, 0, handle, off, length, nil)
	c.expectReply(handle, 0)
	return c.read(int(length))
}
