package nbd

// Wire constants of the NBD protocol, as named in the protocol
// specification (doc/proto.md of the reference implementation). Every
// number on the wire is big-endian.

// Magic numbers.
const (
	magicInit        uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption      uint64 = 0x49484156454f5054 // "IHAVEOPT"
	magicOptionReply uint64 = 0x0003e889045565a9
	magicRequest     uint32 = 0x25609513
	magicSimpleReply uint32 = 0x67446698
)

// Handshake flags sent by the server.
const (
	flagFixedNewstyle uint16 = 1 << 0
	flagNoZeroes      uint16 = 1 << 1
)

// Client flags answering the handshake flags.
const (
	clientFixedNewstyle uint32 = 1 << 0
	clientNoZeroes      uint32 = 1 << 1
	clientKnownFlags           = clientFixedNewstyle | clientNoZeroes
)

// Option types.
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
	optExtendedHeaders uint32 = 11
)

// Option reply types. Error replies have bit 31 set.
const (
	repAck        uint32 = 1
	repServer     uint32 = 2
	repInfo       uint32 = 3
	repErrUnsup   uint32 = 1<<31 + 1
	repErrPolicy  uint32 = 1<<31 + 2
	repErrInvalid uint32 = 1<<31 + 3
	repErrUnknown uint32 = 1<<31 + 6
	repErrTooBig  uint32 = 1<<31 + 9
)

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Transmission flags.
const (
	tflagHasFlags        uint16 = 1 << 0
	tflagReadOnly        uint16 = 1 << 1
	tflagSendFlush       uint16 = 1 << 2
	tflagSendFUA         uint16 = 1 << 3
	tflagSendTrim        uint16 = 1 << 5
	tflagSendWriteZeroes uint16 = 1 << 6
	tflagCanMultiConn    uint16 = 1 << 8
	tflagSendFastZero    uint16 = 1 << 11
)

// exportFlags is what every export advertises. Fast zero is not offered:
// the Export interface cannot tell whether zeroing beats writing.
// CAN_MULTI_CONN holds because Export.Flush covers writes from every
// connection.
const exportFlags = tflagHasFlags | tflagSendFlush | tflagSendFUA |
	tflagSendTrim | tflagSendWriteZeroes | tflagCanMultiConn

// Commands.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
)

// Command flags.
const (
	cmdFlagFUA      uint16 = 1 << 0
	cmdFlagNoHole   uint16 = 1 << 1
	cmdFlagDF       uint16 = 1 << 2
	cmdFlagFastZero uint16 = 1 << 4
)

// Error values of simple replies.
const (
	errnoPerm    uint32 = 1
	errnoIO      uint32 = 5
	errnoInval   uint32 = 22
	errnoNoSpace uint32 = 28
)

// Block size constraints advertised with NBD_INFO_BLOCK_SIZE.
const (
	// MinBlockSize is the smallest length and alignment a client may use.
	MinBlockSize = 1
	// PreferredBlockSize is the length below which requests are served
	// less efficiently.
	PreferredBlockSize = 4096
	// MaxBlockSize is the largest READ, WRITE or WRITE_ZEROES length the
	// server accepts. TRIM carries no payload and may be longer.
	MaxBlockSize = 32 << 20
)

// Frame sizes and limits.
const (
	greetingSize      = 18
	optionHeaderSize  = 16
	requestSize       = 28
	replyHeaderSize   = 16
	exportNameTail    = 124 // zero bytes after an NBD_OPT_EXPORT_NAME reply
	maxStringLength   = 4096
	maxOptionLength   = 64 << 10
	infoRequestFixed  = 6 // name length (4) and request count (2)
	optionReplyHeader = 20
)
