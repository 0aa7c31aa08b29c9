package nbdclient

import (
	"errors"
	"fmt"
	"syscall"
)

// Errors returned by the client. Callers compare with errors.Is.
var (
	// ErrClosed means Close was called.
	ErrClosed = errors.New("nbd client closed")
	// ErrTimeout means a request (or the first connection) did not
	// complete within Options.RetryTimeout, across every reconnection.
	ErrTimeout = errors.New("nbd request not completed within the retry timeout")
	// ErrProtocol means the server broke the protocol.
	ErrProtocol = errors.New("nbd protocol violation")
	// ErrUnknownExport means the server does not serve the export name,
	// for example because it is no longer the volume's primary.
	ErrUnknownExport = errors.New("nbd export not found")
	// ErrForbidden means the server refused NBD_OPT_GO by policy
	// (NBD_REP_ERR_POLICY), for example because a newer attachment of the
	// volume fenced this client. It is final: the client stops
	// reconnecting, and every request fails with it.
	ErrForbidden = errors.New("nbd export refused by server policy")
	// ErrRefused means the server refused NBD_OPT_GO for another reason.
	ErrRefused = errors.New("nbd export refused")
	// ErrSizeChanged means a reconnection found the export smaller than
	// it was when the client first connected.
	ErrSizeChanged = errors.New("nbd export shrank")
	// ErrOutOfRange means a request reaches past the end of the export.
	ErrOutOfRange = errors.New("nbd request beyond end of export")
	// ErrReadOnly means a write was attempted on a read-only export.
	ErrReadOnly = errors.New("nbd export is read-only")
)

// errConnLost marks a request that died with its connection; it is
// retried on the next one and never returned to a caller.
var errConnLost = errors.New("nbd connection lost")

// RemoteError is the error a server returned for one request. Its
// Unwrap gives the errno, so errors.Is(err, syscall.ENOSPC) works.
type RemoteError struct {
	// Command names the NBD command that failed.
	Command string
	// Errno is the error the server sent.
	Errno syscall.Errno
}

// Error describes the failed command.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("nbd %s: server returned %v", e.Command, e.Errno)
}

// Unwrap returns the errno.
func (e *RemoteError) Unwrap() error { return e.Errno }

// remoteErrno maps an NBD error value to an errno. The protocol reuses
// the Linux values; anything unknown is an I/O error.
func remoteErrno(v uint32) syscall.Errno {
	switch v {
	case 1:
		return syscall.EPERM
	case 12:
		return syscall.ENOMEM
	case 22:
		return syscall.EINVAL
	case 28:
		return syscall.ENOSPC
	case 75:
		return syscall.EOVERFLOW
	case 95:
		return syscall.EOPNOTSUPP
	default:
		return syscall.EIO
	}
}
