package nbdclient

import (
	"encoding/binary"
	"net"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// errnoShutdown is NBD_ESHUTDOWN: the server is going away and the client
// should take the request elsewhere.
const errnoShutdown = nbdwire.ErrnoShutdown

// Frame sizes and limits.
const (
	greetingSize        = 18
	requestSize         = 28
	replyHeaderSize     = 16
	optionReplyHeader   = 20
	maxOptionReplyData  = 64 << 10
	defaultMaxPayload   = 32 << 20 // what the spec lets a client assume
	maxZeroesLength     = 1 << 30  // TRIM is split here
	exportInfoSize      = 12       // type, size, flags
	blockSizeInfoLength = 14       // type, minimum, preferred, maximum
)

// request is one transmission-phase command.
type request struct {
	typ    uint16
	flags  uint16
	cookie uint64
	offset uint64
	length uint32
}

// encode returns the request header.
func (r request) encode() []byte {
	b := make([]byte, requestSize)
	binary.BigEndian.PutUint32(b[0:], nbdwire.MagicRequest)
	binary.BigEndian.PutUint16(b[4:], r.flags)
	binary.BigEndian.PutUint16(b[6:], r.typ)
	binary.BigEndian.PutUint64(b[8:], r.cookie)
	binary.BigEndian.PutUint64(b[16:], r.offset)
	binary.BigEndian.PutUint32(b[24:], r.length)
	return b
}

// frame returns the header followed by the payload, ready for one writev.
func (r request) frame(payload []byte) net.Buffers {
	if len(payload) == 0 {
		return net.Buffers{r.encode()}
	}
	return net.Buffers{r.encode(), payload}
}

// reply is the header of a simple reply.
type reply struct {
	magic  uint32
	errno  uint32
	cookie uint64
}

// decodeReply parses a simple reply header.
func decodeReply(b []byte) reply {
	return reply{
		magic:  binary.BigEndian.Uint32(b[0:]),
		errno:  binary.BigEndian.Uint32(b[4:]),
		cookie: binary.BigEndian.Uint64(b[8:]),
	}
}

// commandName names a command in errors and logs.
func commandName(typ uint16) string {
	switch typ {
	case nbdwire.CmdRead:
		return "read"
	case nbdwire.CmdWrite:
		return "write"
	case nbdwire.CmdDisc:
		return "disconnect"
	case nbdwire.CmdFlush:
		return "flush"
	case nbdwire.CmdTrim:
		return "trim"
	case nbdwire.CmdWriteZeroes:
		return "write-zeroes"
	default:
		return "command"
	}
}
