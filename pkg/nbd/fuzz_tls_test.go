package nbd

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// FuzzServeConnTLS drives a server in forced TLS mode with arbitrary
// client bytes, as a client without a certificate would send them. No
// byte sequence may reach an export or get an answer other than the
// greeting and option replies without data (no export listed, no
// information given), up to the start of a TLS handshake.
func FuzzServeConnTLS(f *testing.F) {
	for _, seed := range startTLSSeeds() {
		f.Add(seed)
	}
	pki := newTestPKI(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		exp := newMemExport(64 << 10)
		opts := pki.tlsOptions()
		opts.MaxOptions, opts.HandshakeTimeout = 64, 5*time.Second
		s := NewServer(memExports{"vol": exp, "": exp}, opts)
		client, server := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- s.ServeConn(server) }()
		var got bytes.Buffer
		read := make(chan struct{})
		go func() { io.Copy(&got, client); close(read) }()
		go func() {
			client.Write(input)
			client.Close()
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not return after the client hung up")
		}
		<-read
		if exp.calls() != 0 {
			t.Fatalf("export saw %d calls from a client without TLS", exp.calls())
		}
		if err := checkRefusalsOnly(got.Bytes()); err != nil {
			t.Fatalf("%v; server sent %q", err, got.Bytes())
		}
		exp.checkIntact(t)
	})
}

// checkRefusalsOnly checks what a forced TLS server sent a client
// without a certificate: the greeting, then option replies carrying no
// data, up to an acknowledged NBD_OPT_STARTTLS, after which only TLS may
// follow. The last reply may be cut short by the client hanging up.
func checkRefusalsOnly(b []byte) error {
	if len(b) < greetingSize {
		return nil
	}
	for b = b[greetingSize:]; len(b) >= optionReplyHeader; b = b[optionReplyHeader:] {
		if binary.BigEndian.Uint64(b) != nbdwire.MagicOptionReply {
			return fmt.Errorf("bytes %x where an option reply should start", b[:8])
		}
		option, typ := binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])
		if n := binary.BigEndian.Uint32(b[16:]); n != 0 {
			return fmt.Errorf("reply %#x to option %d carries %d bytes", typ, option, n)
		}
		if typ == nbdwire.RepAck && option == optStartTLS {
			return nil // a TLS handshake follows
		}
		if typ == repServer || typ == nbdwire.RepInfo || (typ == nbdwire.RepAck && option != optAbort) {
			return fmt.Errorf("reply %#x to option %d before TLS", typ, option)
		}
	}
	// The client may hang up in the middle of a reply.
	magic := binary.BigEndian.AppendUint64(nil, nbdwire.MagicOptionReply)
	if n := min(len(b), len(magic)); !bytes.Equal(b[:n], magic[:n]) {
		return fmt.Errorf("bytes %x where an option reply should start", b[:n])
	}
	return nil
}

// startTLSSeeds are client openings against a forced TLS server: every
// option before STARTTLS, STARTTLS with and without a payload, and
// STARTTLS followed by bytes that are not a valid TLS handshake.
func startTLSSeeds() [][]byte {
	flags := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	join := func(parts ...[]byte) []byte { return bytes.Join(append([][]byte{flags}, parts...), nil) }
	hello := []byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}
	return [][]byte{
		join(optionBytes(optList, nil), optionBytes(optInfo, infoPayload("vol", infoName)),
			optionBytes(nbdwire.OptGo, infoPayload("vol")), optionBytes(optAbort, nil)),
		join(optionBytes(optExportName, []byte("vol"))),
		join(optionBytes(optStartTLS, []byte("x")), optionBytes(optList, nil)),
		join(optionBytes(optStartTLS, nil), hello),
		join(optionBytes(optStartTLS, nil), optionBytes(optList, nil)),
		join(optionBytes(optStartTLS, nil), optionBytes(optStartTLS, nil)),
		join(optionBytes(optStructuredReply, nil), optionBytes(optStartTLS, nil)),
	}
}
