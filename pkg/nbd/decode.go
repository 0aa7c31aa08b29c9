package nbd

import (
	"encoding/binary"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// The decoders in this file are pure functions over bytes a client sent,
// kept apart from the connection code so that they can be fuzzed.

// optionHeader is the fixed part of an option a client sends during
// negotiation.
type optionHeader struct {
	option uint32
	length uint32
}

// decodeOptionHeader parses the 16 byte header that precedes every option.
func decodeOptionHeader(b []byte) (optionHeader, error) {
	if len(b) < optionHeaderSize {
		return optionHeader{}, errShortFrame
	}
	if binary.BigEndian.Uint64(b) != nbdwire.MagicOption {
		return optionHeader{}, errBadOptionMagic
	}
	return optionHeader{
		option: binary.BigEndian.Uint32(b[8:]),
		length: binary.BigEndian.Uint32(b[12:]),
	}, nil
}

// checkClientFlags validates the client's answer to the handshake flags
// and reports whether the client asked to omit the zero padding.
func checkClientFlags(flags uint32) (noZeroes bool, err error) {
	if flags&^clientKnownFlags != 0 {
		return false, errUnknownClientFlags
	}
	if flags&clientFixedNewstyle == 0 {
		return false, errNotFixedNewstyle
	}
	return flags&clientNoZeroes != 0, nil
}

// infoRequest is the payload of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16
}

// wants reports whether the client asked for the information type.
func (r infoRequest) wants(info uint16) bool {
	for _, i := range r.infos {
		if i == info {
			return true
		}
	}
	return false
}

// decodeInfoRequest parses the payload of NBD_OPT_INFO and NBD_OPT_GO:
// a length-prefixed export name, then a counted list of information types.
func decodeInfoRequest(p []byte) (infoRequest, error) {
	if len(p) < infoRequestFixed {
		return infoRequest{}, errShortOption
	}
	nameLen := uint64(binary.BigEndian.Uint32(p))
	if nameLen > uint64(len(p)-infoRequestFixed) {
		return infoRequest{}, errShortOption
	}
	if nameLen > maxStringLength {
		return infoRequest{}, errNameTooLong
	}
	rest := p[4+nameLen:]
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*count {
		return infoRequest{}, errBadInfoCount
	}
	req := infoRequest{name: string(p[4 : 4+nameLen])}
	for i := 0; i < count; i++ {
		req.infos = append(req.infos, binary.BigEndian.Uint16(rest[2*i:]))
	}
	return req, nil
}

// request is one transmission phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// decodeRequest parses the 28 byte header of a transmission request. A
// WRITE's payload follows the header and is not part of b.
func decodeRequest(b []byte) (request, error) {
	if len(b) < requestSize {
		return request{}, errShortFrame
	}
	if binary.BigEndian.Uint32(b) != nbdwire.MagicRequest {
		return request{}, errBadRequestMagic
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// checkRequest returns the error value the server must reply with when
// req is sent for an export of the given size, or 0 when the request may
// be passed to the Export. NBD_CMD_DISC is not checked here.
func checkRequest(req request, size uint64) uint32 {
	if req.flags&^allowedFlags(req.typ) != 0 {
		return errnoInval
	}
	switch req.typ {
	case nbdwire.CmdFlush:
		if req.offset != 0 || req.length != 0 {
			return errnoInval
		}
		return 0
	case nbdwire.CmdRead, nbdwire.CmdWrite, nbdwire.CmdTrim, nbdwire.CmdWriteZeroes:
		return checkRange(req, size)
	default:
		return errnoInval
	}
}

// allowedFlags returns the command flags valid for a command under the
// transmission flags this server advertises. FUA is valid on every
// command once NBD_FLAG_SEND_FUA is advertised. NO_HOLE is accepted on
// WRITE_ZEROES as the specification requires; whether zeroed blocks stay
// allocated is the Export's choice, which the interface cannot express.
func allowedFlags(typ uint16) uint16 {
	if typ == nbdwire.CmdWriteZeroes {
		return nbdwire.CmdFlagFUA | cmdFlagNoHole
	}
	return nbdwire.CmdFlagFUA
}

// checkRange checks the offset and length of a command that addresses
// the export. Writes past the end get ENOSPC, everything else EINVAL, as
// the specification recommends. TRIM has no payload and no maximum.
func checkRange(req request, size uint64) uint32 {
	if req.length == 0 {
		return errnoInval
	}
	if req.typ != nbdwire.CmdTrim && req.length > MaxBlockSize {
		return errnoInval
	}
	if req.offset <= size && uint64(req.length) <= size-req.offset {
		return 0
	}
	if req.typ == nbdwire.CmdWrite || req.typ == nbdwire.CmdWriteZeroes {
		return errnoNoSpace
	}
	return errnoInval
}
