package nbdclient

import (
	"bufio"
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
func handshake(nc net.Conn, br *bufio.Reader, name string) (exportInfo, error) {
	serverFlags, err := readGreeting(br)
	if err != nil {
		return exportInfo{}, err
	}
	clientFlags := uint32(nbdwire.FlagFixedNewstyle | serverFlags&nbdwire.FlagNoZeroes)
	msg := binary.BigEndian.AppendUint32(nil, clientFlags)
	msg = append(msg, goOption(name)...)
	if _, err := nc.Write(msg); err != nil {
		return exportInfo{}, err
	}
	return readGoReplies(br)
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
	b := binary.BigEndian.AppendUint64(nil, nbdwire.MagicOption)
	b = binary.BigEndian.AppendUint32(b, nbdwire.OptGo)
	b = binary.BigEndian.AppendUint32(b, uint32(4+len(name)+2+2))
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, 1)
	return binary.BigEndian.AppendUint16(b, nbdwire.InfoBlockSize)
}

// readGoReplies reads NBD_REP_INFO replies up to the final ACK or error.
func readGoReplies(br *bufio.Reader) (exportInfo, error) {
	info := exportInfo{maxPayload: defaultMaxPayload}
	sawExport := false
	for {
		typ, data, err := readOptionReply(br)
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

// readOptionReply reads one reply to NBD_OPT_GO.
func readOptionReply(br *bufio.Reader) (uint32, []byte, error) {
	var h [optionReplyHeader]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read option reply: %w", err)
	}
	magic := binary.BigEndian.Uint64(h[0:])
	option := binary.BigEndian.Uint32(h[8:])
	typ := binary.BigEndian.Uint32(h[12:])
	length := binary.BigEndian.Uint32(h[16:])
	if magic != nbdwire.MagicOptionReply || option != nbdwire.OptGo || length > maxOptionReplyData {
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
