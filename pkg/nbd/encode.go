package nbd

import (
	"encoding/binary"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// greeting returns the first bytes the server sends: the magic numbers of
// newstyle negotiation and the handshake flags.
func greeting() []byte {
	b := make([]byte, 0, greetingSize)
	b = binary.BigEndian.AppendUint64(b, nbdwire.MagicInit)
	b = binary.BigEndian.AppendUint64(b, nbdwire.MagicOption)
	return binary.BigEndian.AppendUint16(b, nbdwire.FlagFixedNewstyle|nbdwire.FlagNoZeroes)
}

// appendOptionReply appends one fixed newstyle option reply.
func appendOptionReply(b []byte, option, typ uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, nbdwire.MagicOptionReply)
	b = binary.BigEndian.AppendUint32(b, option)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// serverEntry is the payload of an NBD_REP_SERVER reply naming an export.
func serverEntry(name string) []byte {
	b := make([]byte, 0, 4+len(name))
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	return append(b, name...)
}

// exportInfo is the payload of NBD_INFO_EXPORT.
func exportInfo(size uint64, flags uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, nbdwire.InfoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, flags)
}

// blockSizeInfo is the payload of NBD_INFO_BLOCK_SIZE.
func blockSizeInfo() []byte {
	b := binary.BigEndian.AppendUint16(nil, nbdwire.InfoBlockSize)
	b = binary.BigEndian.AppendUint32(b, MinBlockSize)
	b = binary.BigEndian.AppendUint32(b, PreferredBlockSize)
	return binary.BigEndian.AppendUint32(b, MaxBlockSize)
}

// nameInfo is the payload of NBD_INFO_NAME.
func nameInfo(name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, infoName)
	return append(b, name...)
}

// exportNameReply answers NBD_OPT_EXPORT_NAME: size, transmission flags
// and, unless the client negotiated NBD_FLAG_C_NO_ZEROES, 124 zero bytes.
func exportNameReply(size uint64, flags uint16, noZeroes bool) []byte {
	b := binary.BigEndian.AppendUint64(nil, size)
	b = binary.BigEndian.AppendUint16(b, flags)
	if !noZeroes {
		b = append(b, make([]byte, exportNameTail)...)
	}
	return b
}

// simpleReply returns the header of a simple reply.
func simpleReply(errno uint32, handle uint64) []byte {
	b := make([]byte, 0, replyHeaderSize)
	b = binary.BigEndian.AppendUint32(b, nbdwire.MagicSimpleReply)
	b = binary.BigEndian.AppendUint32(b, errno)
	return binary.BigEndian.AppendUint64(b, handle)
}
