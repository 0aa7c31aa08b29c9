package nbd

import (
	"errors"
	"syscall"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// ErrServerClosed is returned by Serve and ServeConn once Close was called.
var ErrServerClosed = errors.New("nbd: server closed")

// ErrNoSpace may be returned (or wrapped) by an Export when it cannot
// store a write; the client then sees ENOSPC instead of EIO.
var ErrNoSpace = errors.New("nbd: no space left on export")

// ErrReadOnly may be returned (or wrapped) by an Export that refuses a
// write; the client then sees EPERM instead of EIO.
var ErrReadOnly = errors.New("nbd: export is read-only")

// ErrPolicy may be returned (or wrapped) by Exports.Lookup to refuse a
// client the export exists for, or by an Export to refuse it a request;
// the client then sees NBD_REP_ERR_POLICY, or EPERM for a request.
var ErrPolicy = errors.New("nbd: refused by server policy")

// ErrShutdown may be returned (or wrapped) by an Export that has stopped
// serving, for example because another server took the export over; the
// client then sees NBD_ESHUTDOWN and sends the request again elsewhere.
var ErrShutdown = errors.New("nbd: export is shutting down")

// ErrNoExport may be returned by Exports.Lookup for a name it does not
// serve.
var ErrNoExport = errors.New("nbd: no such export")

// Reasons a connection is ended. They describe what the client did wrong
// and are logged with the client's address.
var (
	errShortFrame         = errors.New("frame shorter than its header")
	errBadOptionMagic     = errors.New("option does not start with IHAVEOPT magic")
	errUnknownClientFlags = errors.New("client set unknown handshake flags")
	errNotFixedNewstyle   = errors.New("client does not speak fixed newstyle negotiation")
	errOptionTooLong      = errors.New("option payload exceeds 64 KiB")
	errTooManyOptions     = errors.New("too many options in one negotiation")
	errUnknownExport      = errors.New("unknown export")
	errClientAborted      = errors.New("client aborted negotiation")
	errBadRequestMagic    = errors.New("request does not start with request magic")
	errWriteTooLarge      = errors.New("write payload exceeds maximum block size")
	errClientDisconnected = errors.New("client disconnected")
	errHungUpInFlight     = errors.New("client disconnected with requests in flight")
	errTruncated          = errors.New("connection closed in the middle of a frame")
	errReplyFailed        = errors.New("reply could not be sent")
	errHandshakeTimeout   = errors.New("handshake timed out")
	errTLSRequired        = errors.New("client chose an export before upgrading to TLS")
	errTLSHandshake       = errors.New("TLS handshake failed")
	errEvicted            = errors.New("evicted: too many connections negotiating")
	errTooManyConns       = errors.New("too many connections from the client's address")
)

// Reasons an NBD_OPT_INFO or NBD_OPT_GO payload is refused with
// NBD_REP_ERR_INVALID.
var (
	errShortOption  = errors.New("option payload shorter than its fields")
	errNameTooLong  = errors.New("export name longer than 4096 bytes")
	errBadInfoCount = errors.New("information request count does not match payload")
)

// errnoOf maps an Export error to the error value sent to the client.
// Anything unrecognised, including a timeout, is an I/O error.
func errnoOf(err error) uint32 {
	switch {
	case errors.Is(err, ErrShutdown):
		return nbdwire.ErrnoShutdown
	case errors.Is(err, ErrNoSpace), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errnoNoSpace
	case errors.Is(err, ErrReadOnly), errors.Is(err, ErrPolicy),
		errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EPERM):
		return errnoPerm
	default:
		return errnoIO
	}
}
