package replication

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// dialRaw connects to a node as a bare protocol client.
func dialRaw(t *testing.T, n *testNode) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func send(t *testing.T, c net.Conn, f Frame) {
	t.Helper()
	if _, err := f.WriteTo(c); err != nil {
		t.Fatal(err)
	}
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, f Frame) Frame {
	t.Helper()
	send(t, c, f)
	reply, err := ReadFrame(r)
	if err != nil {
		t.Fatalf("reading reply to op %d: %v", f.Op, err)
	}
	if reply.ID != f.ID || reply.Op != OpReply {
		t.Fatalf("reply op %d id %d, want reply to id %d", reply.Op, reply.ID, f.ID)
	}
	return reply
}

func hello(epoch uint64) Frame {
	return Frame{Op: OpHello, ID: 1, Epoch: epoch, Payload: helloPayload(vol, "a")}
}

func TestServerRepliesToBadRequestsWithExactStatus(t *testing.T) {
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	r := n.create(t, vol, 8192)
	if err := r.ObserveEpoch(5); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  Frame
		want Status
	}{
		{"write past end", Frame{Op: OpWrite, Epoch: 5, Offset: 8190, Length: 4, Payload: []byte("abcd")}, StatusBadRequest},
		{"offset far past end", Frame{Op: OpWrite, Epoch: 5, Offset: 1 << 40, Length: 1, Payload: []byte("a")}, StatusBadRequest},
		{"zero-length write", Frame{Op: OpWrite, Epoch: 5, Offset: 0}, StatusBadRequest},
		{"length disagrees with payload", Frame{Op: OpWrite, Epoch: 5, Length: 9, Payload: []byte("abcd")}, StatusBadRequest},
		{"zero range past end", Frame{Op: OpZero, Epoch: 5, Offset: 4096, Length: 8192}, StatusBadRequest},
		{"unknown op", Frame{Op: 99, Epoch: 5}, StatusBadRequest},
		{"unknown flag", Frame{Op: OpFlush, Epoch: 5, Flags: 0x80}, StatusBadRequest},
		{"huge read", Frame{Op: OpRead, Epoch: 5, Length: 1 << 31}, StatusBadRequest},
		{"stale epoch", Frame{Op: OpWrite, Epoch: 4, Length: 4, Payload: []byte("abcd")}, StatusStaleEpoch},
		{"second hello", Frame{Op: OpHello, Epoch: 5, Payload: helloPayload(vol, "a")}, StatusBadRequest},
		{"valid write", Frame{Op: OpWrite, Epoch: 5, Offset: 100, Length: 4, Payload: []byte("good")}, StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, rd := dialRaw(t, n)
			if st := roundTrip(t, c, rd, hello(5)).Status; st != StatusOK {
				t.Fatalf("hello status %d", st)
			}
			tc.req.ID = 7
			if st := roundTrip(t, c, rd, tc.req).Status; st != tc.want {
				t.Fatalf("status %d, want %d", st, tc.want)
			}
		})
	}
	got := make([]byte, 8192)
	if err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 8192)
	copy(want[100:], "good")
	if !bytes.Equal(got, want) {
		t.Fatal("a refused request changed the replica")
	}
	if r.Epoch() != 5 {
		t.Fatalf("epoch %d, want 5", r.Epoch())
	}
}

func TestServerRefusesConnectionsItCannotBind(t *testing.T) {
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	r := n.create(t, vol, 4096)
	if err := r.ObserveEpoch(3); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  Frame
		want Status
	}{
		{"unknown volume", Frame{Op: OpHello, Epoch: 3, Payload: helloPayload("nope", "a")}, StatusUnknownVolume},
		{"empty volume id", Frame{Op: OpHello, Epoch: 3}, StatusBadRequest},
		{"volume id without node", Frame{Op: OpHello, Epoch: 3, Payload: []byte(vol)}, StatusBadRequest},
		{"hello for another node", Frame{Op: OpHello, Epoch: 3, Payload: helloPayload(vol, "b")}, StatusWrongNode},
		{"stale epoch hello", Frame{Op: OpHello, Epoch: 2, Payload: helloPayload(vol, "a")}, StatusStaleEpoch},
		{"write before hello", Frame{Op: OpWrite, Epoch: 3, Length: 1, Payload: []byte("x")}, StatusNotBound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, rd := dialRaw(t, n)
			reply := roundTrip(t, c, rd, tc.req)
			if reply.Status != tc.want {
				t.Fatalf("status %d, want %d", reply.Status, tc.want)
			}
			if tc.want == StatusStaleEpoch && reply.Epoch != 3 {
				t.Fatalf("stale refusal carries epoch %d, want the replica's 3", reply.Epoch)
			}
			if _, err := ReadFrame(rd); !errors.Is(err, io.EOF) {
				t.Fatalf("connection still open after refusal: %v", err)
			}
		})
	}
}

func TestServerRefusesLargeFramesBeforeHello(t *testing.T) {
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	n.create(t, vol, 4096)
	c, rd := dialRaw(t, n)
	var h [headerSize]byte
	(&Frame{Op: OpHello, ID: 1}).putHeader(h[:])
	binary.BigEndian.PutUint32(h[40:], maxPayload)
	c.Write(h[:])
	if _, err := ReadFrame(rd); !errors.Is(err, io.EOF) {
		t.Fatalf("connection announcing a %d-byte hello stayed open: %v", maxPayload, err)
	}
}

func TestServerDropsConnectionOnCorruptFrame(t *testing.T) {
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	r := n.create(t, vol, 4096)
	for _, tc := range []struct {
		name    string
		corrupt func([]byte)
	}{
		{"bad checksum", func(b []byte) { b[headerSize] ^= 0xff }},
		{"bad version", func(b []byte) { b[4] = 9 }},
		{"bad magic", func(b []byte) { b[0] = 'X' }},
		{"oversized payload", func(b []byte) { binary.BigEndian.PutUint32(b[40:], maxPayload+1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, rd := dialRaw(t, n)
			roundTrip(t, c, rd, hello(0))
			var buf bytes.Buffer
			(&Frame{Op: OpWrite, ID: 2, Length: 4, Payload: []byte("evil")}).WriteTo(&buf)
			b := buf.Bytes()
			tc.corrupt(b)
			c.Write(b)
			for {
				if _, err := ReadFrame(rd); err != nil {
					break // replies, if any, then the close
				}
			}
			got := make([]byte, 4)
			r.ReadAt(got, 0)
			if !bytes.Equal(got, make([]byte, 4)) {
				t.Fatalf("corrupt frame was applied: %q", got)
			}
		})
	}
}

func TestServerSurvivesTruncatedFrames(t *testing.T) {
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	n.create(t, vol, 4096)
	var buf bytes.Buffer
	(&Frame{Op: OpWrite, ID: 2, Length: 1000, Payload: make([]byte, 1000)}).WriteTo(&buf)
	for _, cut := range []int{1, headerSize - 1, headerSize, headerSize + 500} {
		c, rd := dialRaw(t, n)
		roundTrip(t, c, rd, hello(0))
		c.Write(buf.Bytes()[:cut])
		c.Close()
	}
	c, rd := dialRaw(t, n)
	if st := roundTrip(t, c, rd, hello(0)).Status; st != StatusOK {
		t.Fatalf("server unusable after truncated frames: status %d", st)
	}
}

func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	(&Frame{Op: OpWrite, ID: 1, Epoch: 2, Offset: 3, Length: 4, Payload: []byte("data")}).WriteTo(&buf)
	f.Add(buf.Bytes())
	buf.Reset()
	(&Frame{Op: OpHello, Payload: helloPayload(vol, "a")}).WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("TRRP"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ReadFrame(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := fr.WriteTo(&out); err != nil {
			t.Fatal(err)
		}
		again, err := ReadFrame(&out)
		if err != nil {
			t.Fatalf("re-read of a valid frame: %v", err)
		}
		if again.ID != fr.ID || again.Op != fr.Op || !bytes.Equal(again.Payload, fr.Payload) {
			t.Fatal("frame changed in a round trip")
		}
		_ = validateRequest(&fr, 4096)
	})
}

// FuzzServerConn feeds arbitrary bytes, after a valid hello, to a replica
// server connection: it must return, and the replica must keep its size.
func FuzzServerConn(f *testing.F) {
	var buf bytes.Buffer
	(&Frame{Op: OpWrite, ID: 2, Length: 4, Payload: []byte("data")}).WriteTo(&buf)
	(&Frame{Op: OpZero, ID: 3, Offset: 1, Length: 100}).WriteTo(&buf)
	(&Frame{Op: OpFlush, ID: 4}).WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		n := &testNode{dir: dir, replicas: map[string]*blockstore.Replica{}}
		r, err := blockstore.Create(filepath.Join(dir, "v"), vol, 8192)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		n.replicas[vol] = r
		srv := NewServer(n, ServerOptions{HelloTimeout: time.Second})
		client, server := net.Pipe()
		sc := newServerConn(srv, server)
		done := make(chan struct{})
		go func() { sc.serve(); server.Close(); close(done) }()
		go io.Copy(io.Discard, client)
		(&Frame{Op: OpHello, ID: 1, Payload: helloPayload(vol, "")}).WriteTo(client)
		client.Write(b)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server connection did not return")
		}
		fi, err := os.Stat(r.DataPath())
		if err != nil || fi.Size() != 8192 {
			t.Fatalf("data file size %v (err %v), want 8192", fi.Size(), err)
		}
	})
}
