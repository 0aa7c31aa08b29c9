package nbd

import "github.com/trireme-csi/trireme/internal/nbdwire"

// Wire constants of the NBD protocol that only the server uses, named as
// in the protocol specification; those both ends use are in
// internal/nbdwire. Every number on the wire is big-endian.

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
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
	optExtendedHeaders uint32 = 11
)

// Option reply types. Error replies have bit 31 set.
const (
	repServer     uint32 = 2
	repErrUnsup   uint32 = 1<<31 + 1
	repErrInvalid uint32 = 1<<31 + 3
	repErrTLSReqd uint32 = 1<<31 + 5
	repErrTooBig  uint32 = 1<<31 + 9
)

// Information types of NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoName        uint16 = 1
	infoDescription uint16 = 2
)

// Transmission flags.
const (
	tflagCanMultiConn uint16 = 1 << 8
	tflagSendFastZero uint16 = 1 << 11
)

// exportFlags is what every export advertises. Fast zero is not offered:
// the Export interface cannot tell whether zeroing beats writing.
// CAN_MULTI_CONN holds because Export.Flush covers writes from every
// connection.
const exportFlags = nbdwire.TflagHasFlags | nbdwire.TflagSendFlush | nbdwire.TflagSendFUA |
	nbdwire.TflagSendTrim | nbdwire.TflagSendWriteZeroes | tflagCanMultiConn

// Commands.
const (
	cmdCache uint16 = 5
)

// Command flags.
const (
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
