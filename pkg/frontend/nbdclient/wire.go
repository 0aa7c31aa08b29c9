package nbdclient

import (
	"encoding/binary"
	"net"
)

// Wire constants of the NBD protocol, named as in its specification.
// Every number on the wire is big-endian.
const (
	magicInit        uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption      uint64 = 0x49484156454f5054 // "IHAVEOPT"
	magicOptionReply uint64 = 0x0003e889045565a9
	magicRequest     uint32 = 0x25609513
	magicSimpleReply uint32 = 0x67446698
)

// Handshake flags, sent by the server and echoed by the client.
const (
	flagFixedNewstyle uint16 = 1 << 0
	flagNoZeroes      uint16 = 1 << 1
)

// Options and option replies.
const (
	optGo         uint32 = 7
	repAck        uint32 = 1
	repInfo       uint32 = 3
	repErrBit     uint32 = 1 << 31
	repErrPolicy  uint32 = repErrBit | 2
	repErrUnknown uint32 = repErrBit | 6
)

// Information types of NBD_OPT_GO replies.
const (
	infoExport    uint16 = 0
	infoBlockSize uint16 = 3
)

// Transmission flags.
const (
	tflagHasFlags        uint16 = 1 << 0
	tflagReadOnly        uint16 = 1 << 1
	tflagSendFlush       uint16 = 1 << 2
	tflagSendFUA         uint16 = 1 << 3
	tflagSendTrim        uint16 = 1 << 5
	tflagSendWriteZeroes uint16 = 1 << 6
)

// Commands and command flags.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdWriteZeroes uint16 = 6

	cmdFlagFUA uint16 = 1 << 0
)

// errnoShutdown is NBD_ESHUTDOWN: the server is going away and the client
// should take the request elsewhere.
const errnoShutdown uint32 = 108

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
	binary.BigEndian.PutUint32(b[0:], magicRequest)
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
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdDisc:
		return "disconnect"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdWriteZeroes:
		return "write-zeroes"
	default:
		return "command"
	}
}
