// Package nbdwire holds the NBD protocol numbers that both ends of a
// connection use: Trireme's server (pkg/nbd) and its client
// (pkg/frontend/nbdclient). Names follow the protocol specification;
// every number on the wire is big-endian.
package nbdwire

// Magic numbers.
const (
	MagicInit        uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	MagicOption      uint64 = 0x49484156454f5054 // "IHAVEOPT"
	MagicOptionReply uint64 = 0x0003e889045565a9
	MagicRequest     uint32 = 0x25609513
	MagicSimpleReply uint32 = 0x67446698
)

// Handshake flags sent by the server.
const (
	FlagFixedNewstyle uint16 = 1 << 0
	FlagNoZeroes      uint16 = 1 << 1
)

// OptGo is the option that selects an export and ends negotiation.
const OptGo uint32 = 7

// Option reply types. Error replies have bit 31 set.
const (
	RepAck        uint32 = 1
	RepInfo       uint32 = 3
	RepErrBit     uint32 = 1 << 31
	RepErrPolicy  uint32 = RepErrBit | 2
	RepErrUnknown uint32 = RepErrBit | 6
)

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	InfoExport    uint16 = 0
	InfoBlockSize uint16 = 3
)

// Transmission flags.
const (
	TflagHasFlags        uint16 = 1 << 0
	TflagReadOnly        uint16 = 1 << 1
	TflagSendFlush       uint16 = 1 << 2
	TflagSendFUA         uint16 = 1 << 3
	TflagSendTrim        uint16 = 1 << 5
	TflagSendWriteZeroes uint16 = 1 << 6
)

// Commands.
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdWriteZeroes uint16 = 6
)

// CmdFlagFUA asks for the command's data to be durable before the reply.
const CmdFlagFUA uint16 = 1 << 0

// ErrnoShutdown is NBD_ESHUTDOWN in a simple reply: the server is going
// away, and the client should send the request again elsewhere.
const ErrnoShutdown uint32 = 108
