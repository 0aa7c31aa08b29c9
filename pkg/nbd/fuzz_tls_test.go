package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// FuzzServeConnTLS drives a server in forced TLS mode with arbitrary
// client bytes, as a client without a certificate would send them. No
// byte sequence may reach an export, list a name or make the server
// answer anything but the greeting and option replies.
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
		if bytes.Contains(got.Bytes(), []byte("vol")) {
			t.Fatalf("server named an export to a client without TLS: %q", got.Bytes())
		}
		exp.checkIntact(t)
	})
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
