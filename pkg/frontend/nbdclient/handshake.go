package nbdclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// exportInfo is what NBD_OPT_GO told the client about the export.
type exportInfo struct {
	size       uint64
	flags      uint16
	maxPayload uint32
}

// has reports whether the server set a transmission flag.
func (i exportInfo) has(flag uint16) bool { return i.flags&flag != 0 }

// handshake runs fixed newstyle negotiation and enters transmission on
// the named export with NBD_OPT_GO. Only simple replies are negotiated.
// With tlsCfg set, the connection is upgraded with NBD_OPT_STARTTLS
// first; the connection and reader to use afterwards are returned.
func handshake(ctx context.Context, nc net.Conn, br *bufio.Reader, name string, tlsCfg *tls.Config) (net.Conn, *bufio.Reader, exportInfo, error) {
	serverFlags, err := readGreeting(br)
	if err != nil {
		return nil, nil, exportInfo{}, err
	}
	clientFlags := uint32(nbdwire.FlagFixedNewstyle | serverFlags&nbdwire.FlagNoZeroes)
	msg := binary.BigEndian.AppendUint32(nil, clientFlags)
	if tlsCfg != nil {
		if nc, br, err = startTLS(ctx, nc, br, msg, tlsCfg); err != nil {
			return nil, nil, exportInfo{}, err
		}
		msg = nil
	}
	msg = append(msg, goOption(name)...)
	if _, err := nc.Write(msg); err != nil {
		return nil, nil, exportInfo{}, err
	}
	info, err := readGoReplies(br)
	return nc, br, info, err
}

// startTLS sends the client flags and NBD_OPT_STARTTLS and, once the
// server acknowledges, runs the TLS handshake. The server must not have
// sent anything past its reply: bytes it did would be outside TLS.
func startTLS(ctx context.Context, nc net.Conn, br *bufio.Reader, flags []byte, cfg *tls.Config) (net.Conn, *bufio.Reader, error) {
	msg := append(flags, encodeOption(optStartTLS, nil)...)
	if _, err := nc.Write(msg); err != nil {
		return nil, nil, err
	}
	typ, data, err := readOptionReply(br, optStartTLS)
	if err != nil {
		return nil, nil, err
	}
	if typ != nbdwire.RepAck {
		return nil, nil, fmt.Errorf("%w: server does not offer TLS: %w", ErrRefused, optionError(typ, data))
	}
	if br.Buffered() > 0 {
		return nil, nil, fmt.Errorf("%w: server sent data before the TLS handshake", ErrProtocol)
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	conn := &tlsConn{Conn: tc, raw: nc}
	return conn, bufio.NewReaderSize(conn, 64<<10), nil
}

// tlsConn is a session's TLS connection. Close closes the TCP connection
// at once, without the TLS close alert, which could wait on a peer that
// stopped reading.
type tlsConn struct {
	*tls.Conn
	raw net.Conn
}

// Close implements net.Conn.
func (c *tlsConn) Close() error { return c.raw.Close() }

// tlsConfig returns the configuration for a connection to addr: cfg, with
// the host of addr as ServerName when cfg names none and verifies it.
func tlsConfig(cfg *tls.Config, addr string) *tls.Config {
	if cfg == nil || cfg.ServerName != "" || cfg.InsecureSkipVerify {
		return cfg
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.ServerName = host
	return cfg
}

// readGreeting reads the server's greeting and returns its handshake
// flags. Servers without fixed newstyle negotiation are refused.
func readGreeting(br *bufio.Reader) (uint16, error) {
	var b [greetingSize]byte
	if _, err := io.ReadFull(br, b[:]); err != nil {
		return 0, fmt.Errorf("read greeting: %w", err)
	}
	if binary.BigEndian.Uint64(b[0:]) != nbdwire.MagicInit || binary.BigEndian.Uint64(b[8:]) != nbdwire.MagicOption {
		return 0, fmt.Errorf("%w: not a newstyle NBD server", ErrProtocol)
	}
	flags := binary.BigEndian.Uint16(b[16:])
	if flags&nbdwire.FlagFixedNewstyle == 0 {
		return 0, fmt.Errorf("%w: server does not offer fixed newstyle negotiation", ErrProtocol)
	}
	return flags, nil
}

// goOption encodes NBD_OPT_GO for name, asking for block size limits.
func goOption(name string) []byte {
	p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	p = append(p, name...)
	p = binary.BigEndian.AppendUint16(p, 1)
	return encodeOption(nbdwire.OptGo, binary.BigEndian.AppendUint16(p, nbdwire.InfoBlockSize))
}

// optStartTLS is NBD_OPT_STARTTLS.
const optStartTLS uint32 = 5

// encodeOption encodes one option with its payload.
func encodeOption(opt uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// readGoReplies reads NBD_REP_INFO replies up to the final ACK or error.
func readGoReplies(br *bufio.Reader) (exportInfo, error) {
	info := exportInfo{maxPayload: defaultMaxPayload}
	sawExport := false
	for {
		typ, data, err := readOptionReply(br, nbdwire.OptGo)
		if err != nil {
			return exportInfo{}, err
		}
		switch {
		case typ == nbdwire.RepAck && sawExport:
			return info, nil
		case typ == nbdwire.RepAck:
			return exportInfo{}, fmt.Errorf("%w: NBD_OPT_GO acknowledged without export information", ErrProtocol)
		case typ == nbdwire.RepInfo:
			sawExport = parseInfo(&info, data) || sawExport
		case typ&nbdwire.RepErrBit != 0:
			return exportInfo{}, optionError(typ, data)
		}
	}
}

// readOptionReply reads one reply to the option sent.
func readOptionReply(br *bufio.Reader, sent uint32) (uint32, []byte, error) {
	var h [optionReplyHeader]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	magic := binary.BigEndian.Uint64(h[0:])
	option := binary.BigEndian.Uint32(h[8:])
	typ := binary.BigEndian.Uint32(h[12:])
	length := binary.BigEndian.Uint32(h[16:])
	if magic != nbdwire.MagicOptionReply || option != sent || length > maxOptionReplyData {
		return 0, nil, fmt.Errorf("%w: bad option reply (magic %#x, option %d, length %d)",
			ErrProtocol, magic, option, length)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(br, data); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	return typ, data, nil
}

// parseInfo records one NBD_REP_INFO payload and reports whether it was
// the mandatory NBD_INFO_EXPORT. Unknown information types are ignored.
func parseInfo(info *exportInfo, data []byte) bool {
	if len(data) < 2 {
		return false
	}
	switch binary.BigEndian.Uint16(data) {
	case nbdwire.InfoExport:
		if len(data) < exportInfoSize {
			return false
		}
		info.size = binary.BigEndian.Uint64(data[2:])
		info.flags = binary.BigEndian.Uint16(data[10:])
		return true
	case nbdwire.InfoBlockSize:
		if len(data) >= blockSizeInfoLength {
			if max := binary.BigEndian.Uint32(data[10:]); max > 0 {
				info.maxPayload = min(max, defaultMaxPayload)
			}
		}
	}
	return false
}

// optionError turns an error reply into an error value.
func optionError(typ uint32, data []byte) error {
	msg := string(data)
	switch typ {
	case nbdwire.RepErrUnknown:
		return fmt.Errorf("%w: %s", ErrUnknownExport, msg)
	case nbdwire.RepErrPolicy:
		return fmt.Errorf("%w: %s", ErrForbidden, msg)
	}
	return fmt.Errorf("%w: reply type %#x: %s", ErrRefused, typ, msg)
}
