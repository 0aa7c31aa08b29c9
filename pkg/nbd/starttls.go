package nbd

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// Under Options.TLS the server runs in what the NBD specification calls
// forced TLS mode: before the client has sent NBD_OPT_STARTTLS and
// completed the TLS handshake, every option but STARTTLS and ABORT is
// answered with NBD_REP_ERR_TLS_REQD, so that a client without a
// certificate the server accepts learns nothing, not even which exports
// exist. NBD_OPT_EXPORT_NAME cannot be answered with an error, so it ends
// the connection.

// negotiationBufferSize is the read buffer of a connection while it
// negotiates; transmission gets a larger one. Keeping it small bounds
// what many idle half-open connections cost.
const negotiationBufferSize = 4 << 10

// transmissionBufferSize is the read buffer of a connection in
// transmission, big enough for most WRITE payloads in one read.
const transmissionBufferSize = 64 << 10

// tlsRecordSize is the largest TLS record's plaintext; replies over TLS
// are gathered into records of this size.
const tlsRecordSize = 16 << 10

// tlsRequired reports whether the client must upgrade to TLS before the
// option is answered.
func (c *conn) tlsRequired(option uint32) bool {
	return c.srv.opts.TLS != nil && c.tlsConn == nil && option != optStartTLS && option != optAbort
}

// refuseBeforeTLS answers an option sent before the TLS upgrade.
func (c *conn) refuseBeforeTLS(option uint32) error {
	c.logOption(option, "TLS required")
	if option == optExportName {
		return errTLSRequired
	}
	return c.write(appendOptionReply(nil, option, repErrTLSReqd, nil))
}

// startTLS answers NBD_OPT_STARTTLS and, once acknowledged, runs the TLS
// handshake as the server. Negotiation then goes on over TLS, still under
// the handshake deadline, which bounds the TLS handshake too.
func (c *conn) startTLS(payload []byte) error {
	switch {
	case c.srv.opts.TLS == nil:
		c.logOption(optStartTLS, "TLS not configured")
		return c.write(appendOptionReply(nil, optStartTLS, repErrUnsup, nil))
	case c.tlsConn != nil:
		c.logOption(optStartTLS, "TLS already negotiated")
		return c.write(appendOptionReply(nil, optStartTLS, repErrInvalid, nil))
	case len(payload) != 0:
		c.logOption(optStartTLS, "STARTTLS with payload")
		return c.write(appendOptionReply(nil, optStartTLS, repErrInvalid, nil))
	}
	if err := c.write(appendOptionReply(nil, optStartTLS, nbdwire.RepAck, nil)); err != nil {
		return err
	}
	tc := tls.Server(&drainConn{Conn: c.nc, br: c.br}, c.srv.opts.TLS)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return fmt.Errorf("%w: %w", errTLSHandshake, readError(err))
	}
	c.tlsConn, c.nc = tc, tc
	c.br = bufio.NewReaderSize(tc, negotiationBufferSize)
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		c.peer = certs[0]
	}
	return nil
}

// authorize asks Options.Authorize whether the client may open an
// export. The check runs before the export is looked up, so that a
// refusal does not tell whether the export exists.
func (c *conn) authorize(name string) error {
	if c.srv.opts.Authorize == nil {
		return nil
	}
	if err := c.srv.opts.Authorize(c.peer, name); err != nil {
		return fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return nil
}

// visibleExports returns the exports LIST may name to this client: those
// Authorize lets it open.
func (c *conn) visibleExports() []string {
	names := c.srv.exports.List()
	if c.srv.opts.Authorize == nil {
		return names
	}
	visible := names[:0:0]
	for _, name := range names {
		if c.srv.opts.Authorize(c.peer, name) == nil {
			visible = append(visible, name)
		}
	}
	return visible
}

// drainConn reads what a bufio.Reader already holds before reading from
// the connection beneath it. It lets a connection change readers (to TLS,
// or to a larger buffer) without losing bytes the client sent early.
// Only the connection's one reading goroutine uses it.
type drainConn struct {
	net.Conn
	br *bufio.Reader
}

// Read implements io.Reader.
func (d *drainConn) Read(p []byte) (int, error) {
	if d.br != nil {
		if d.br.Buffered() > 0 {
			return d.br.Read(p)
		}
		d.br = nil // let the old buffer go
	}
	return d.Conn.Read(p)
}

// transmissionReader returns the reader transmission uses: a larger
// buffer over the negotiated connection, starting with whatever the
// client sent after its last option.
func (c *conn) transmissionReader() *bufio.Reader {
	var r io.Reader = c.nc
	if c.br.Buffered() > 0 {
		r = &drainConn{Conn: c.nc, br: c.br}
	}
	return bufio.NewReaderSize(r, transmissionBufferSize)
}

// writeBatch writes queued replies. Over TLS they are gathered into full
// records, rather than one record per header and per payload.
func (c *conn) writeBatch(batch net.Buffers) error {
	if c.tlsConn == nil {
		_, err := batch.WriteTo(c.nc)
		return err
	}
	if c.bw == nil {
		c.bw = bufio.NewWriterSize(c.tlsConn, tlsRecordSize)
	}
	for _, b := range batch {
		if _, err := c.bw.Write(b); err != nil {
			return err
		}
	}
	return c.bw.Flush()
}
