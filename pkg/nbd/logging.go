package nbd

import (
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// Logging policy: one line per connection that ends badly, one per
// refused request or option (up to maxLoggedRejections a connection) and
// one for the first Export failure of a connection; counts of the rest go
// into the closing line. Every line names the client's address. Normal
// connects and disconnects are logged at V(2).

// maxLoggedRejections is how many refused requests one connection logs
// line by line; the rest are only counted in the closing line, so that a
// misbehaving client cannot flood the log.
const maxLoggedRejections = 16

// maxLoggedName bounds how much of a client-supplied export name is logged.
const maxLoggedName = 256

// loggedName returns the connection's export name as it may appear in a
// log line.
func (c *conn) loggedName() string {
	return truncateName(c.name)
}

// truncateName shortens a client-supplied export name for logging.
func truncateName(name string) string {
	if len(name) > maxLoggedName {
		return name[:maxLoggedName] + "..."
	}
	return name
}

// logEnd writes the one line that closes a connection's story.
func (c *conn) logEnd(err error) {
	kv := []any{"remote", c.remote, "export", c.loggedName(),
		"requests", c.requests.Load(), "rejected", c.rejected.Load(),
		"exportErrors", c.exportErrors.Load()}
	if err == nil || errors.Is(err, errClientAborted) || errors.Is(err, ErrServerClosed) ||
		errors.Is(err, errClientDisconnected) || errors.Is(err, errEvicted) {
		reason := "client sent NBD_CMD_DISC"
		if err != nil {
			reason = err.Error()
		}
		klog.V(2).InfoS("NBD client disconnected", append(kv, "reason", reason)...)
		return
	}
	klog.InfoS("NBD connection closed", append(kv, "reason", err.Error())...)
}

// logRejection logs a refused request, up to maxLoggedRejections per
// connection.
func (c *conn) logRejection(req request, errno uint32) {
	if c.rejected.Add(1) > maxLoggedRejections {
		return
	}
	klog.InfoS("NBD request rejected", "remote", c.remote, "export", c.loggedName(),
		"command", commandName(req.typ), "flags", req.flags, "offset", req.offset,
		"length", req.length, "errno", errno, "reason", rejectionReason(req, c.size, errno))
}

// logOption logs an option the server refused during negotiation.
func (c *conn) logOption(option uint32, reason string) {
	if c.refusedOptions.Add(1) > maxLoggedRejections {
		return
	}
	klog.InfoS("NBD option refused", "remote", c.remote, "option", option, "reason", reason)
}

// logExportError logs the first Export failure of a connection; later
// ones are counted in the closing line. Failures caused by the
// connection closing are not logged.
func (c *conn) logExportError(req request, err error) {
	if c.ctx.Err() != nil {
		return
	}
	if c.exportErrors.Add(1) > 1 {
		return
	}
	klog.ErrorS(err, "NBD export request failed", "remote", c.remote, "export", c.loggedName(),
		"command", commandName(req.typ), "offset", req.offset, "length", req.length)
}

// commandName names a command for logs.
func commandName(typ uint16) string {
	switch typ {
	case nbdwire.CmdRead:
		return "read"
	case nbdwire.CmdWrite:
		return "write"
	case nbdwire.CmdDisc:
		return "disc"
	case nbdwire.CmdFlush:
		return "flush"
	case nbdwire.CmdTrim:
		return "trim"
	case cmdCache:
		return "cache"
	case nbdwire.CmdWriteZeroes:
		return "write-zeroes"
	default:
		return fmt.Sprintf("unknown(%d)", typ)
	}
}

// supportedCommand reports whether the server implements a command.
func supportedCommand(typ uint16) bool {
	switch typ {
	case nbdwire.CmdRead, nbdwire.CmdWrite, nbdwire.CmdDisc, nbdwire.CmdFlush, nbdwire.CmdTrim, nbdwire.CmdWriteZeroes:
		return true
	default:
		return false
	}
}

// rejectionReason explains, for the log, why checkRequest refused req.
func rejectionReason(req request, size uint64, errno uint32) string {
	switch {
	case !supportedCommand(req.typ):
		return "unsupported command"
	case req.flags&^allowedFlags(req.typ) != 0:
		return "flags not valid for command"
	case req.typ == nbdwire.CmdFlush:
		return "flush with nonzero offset or length"
	case req.length == 0:
		return "zero length"
	case req.typ != nbdwire.CmdTrim && req.length > MaxBlockSize:
		return "length exceeds maximum block size"
	case errno != 0:
		return fmt.Sprintf("range past end of export (size %d)", size)
	default:
		return "accepted"
	}
}
