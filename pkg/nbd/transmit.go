package nbd

import (
	"errors"
	"fmt"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// transmit reads requests until the client disconnects or breaks the
// protocol. Valid requests run concurrently, up to the in-flight limits;
// their replies go out in completion order, matched by handle. On
// NBD_CMD_DISC every request in flight is answered before it returns.
func (c *conn) transmit() error {
	var hdr [requestSize]byte
	for {
		if err := c.readFull(hdr[:]); err != nil {
			return c.hangUpReason(err)
		}
		req, err := decodeRequest(hdr[:])
		if err != nil {
			return err
		}
		if req.typ == nbdwire.CmdDisc {
			c.limit.waitIdle()
			c.waitReplies()
			return nil
		}
		if err := c.dispatch(req); err != nil {
			return err
		}
	}
}

// hangUpReason tells a client that closed between requests with nothing
// pending, which some clients do instead of NBD_CMD_DISC, from one that
// left requests unanswered.
func (c *conn) hangUpReason(err error) error {
	if n := c.limit.inFlight(); n > 0 && errors.Is(err, errClientDisconnected) {
		return fmt.Errorf("%w: %d", errHungUpInFlight, n)
	}
	return err
}

// dispatch refuses an invalid request or starts a valid one.
func (c *conn) dispatch(req request) error {
	c.requests.Add(1)
	if req.typ == nbdwire.CmdWrite && req.length > MaxBlockSize {
		// The payload is too large to skip safely: answer, then hang up.
		c.rejected.Add(1)
		if err := c.sendReply(req.handle, errnoInval, nil); err != nil {
			return err
		}
		return fmt.Errorf("%w: length %d", errWriteTooLarge, req.length)
	}
	// An export may grow while clients are connected (online volume
	// expansion): each request is checked against its size now.
	c.size = exportSize(c.export)
	if errno := checkRequest(req, c.size); errno != 0 {
		return c.refuse(req, errno)
	}
	return c.start(req)
}

// refuse answers an invalid request with errno, without touching the
// Export. A refused write's payload is read and dropped.
func (c *conn) refuse(req request, errno uint32) error {
	if req.typ == nbdwire.CmdWrite {
		if err := c.discard(req.length); err != nil {
			return err
		}
	}
	c.logRejection(req, errno)
	return c.sendReply(req.handle, errno, nil)
}

// start reserves room for a valid request, reads a write's payload and
// hands the request to its own goroutine.
func (c *conn) start(req request) error {
	var n int64
	if req.typ == nbdwire.CmdRead || req.typ == nbdwire.CmdWrite {
		n = int64(req.length)
	}
	c.limit.acquire(n)
	c.srv.budget.Acquire(n)
	buf := make([]byte, n)
	if req.typ == nbdwire.CmdWrite {
		if err := c.readRest(buf); err != nil {
			c.srv.budget.Release(n)
			c.limit.release(n)
			return err
		}
	}
	go c.handle(req, buf)
	return nil
}

// handle runs one request against the Export and sends its reply.
func (c *conn) handle(req request, buf []byte) {
	defer c.limit.release(int64(len(buf)))
	defer c.srv.budget.Release(int64(len(buf)))
	errno := c.execute(req, buf)
	var data []byte
	if req.typ == nbdwire.CmdRead && errno == 0 {
		data = buf
	}
	if err := c.sendReply(req.handle, errno, data); err != nil {
		c.fail(fmt.Errorf("%w: %w", errReplyFailed, err))
	}
}

// execute applies a checked request to the Export and maps its error.
func (c *conn) execute(req request, buf []byte) uint32 {
	err := c.apply(req, buf)
	if err == nil {
		return 0
	}
	c.logExportError(req, err)
	return errnoOf(err)
}

// apply calls the Export method for a checked request. Offsets fit in an
// int64 because checkRequest bounded them by the export size.
func (c *conn) apply(req request, buf []byte) error {
	ctx, exp := c.ctx, c.export
	off, length := int64(req.offset), int64(req.length)
	fua := req.flags&nbdwire.CmdFlagFUA != 0
	switch req.typ {
	case nbdwire.CmdRead:
		return exp.ReadAt(ctx, buf, off)
	case nbdwire.CmdWrite:
		return exp.WriteAt(ctx, buf, off, fua)
	case nbdwire.CmdFlush:
		return exp.Flush(ctx)
	case nbdwire.CmdTrim:
		if err := exp.Trim(ctx, off, length); err != nil || !fua {
			return err
		}
		return exp.Flush(ctx)
	default:
		return exp.WriteZeroes(ctx, off, length, fua)
	}
}

// sendReply queues a simple reply, with a READ's data, and writes the
// queue unless another handler is already writing it. Replies that finish
// while a write is under way go out together in the next one, so a busy
// connection needs far fewer system calls than replies.
func (c *conn) sendReply(handle uint64, errno uint32, data []byte) error {
	c.wmu.Lock()
	c.replies = append(c.replies, simpleReply(errno, handle))
	if len(data) > 0 {
		c.replies = append(c.replies, data)
	}
	if c.flushing {
		c.wmu.Unlock()
		return nil
	}
	c.flushing = true
	var err error
	for len(c.replies) > 0 && err == nil {
		batch := c.replies
		c.replies = nil
		c.wmu.Unlock()
		err = c.writeBatch(batch)
		c.wmu.Lock()
	}
	c.replies = nil
	c.flushing = false
	c.flushed.Broadcast()
	c.wmu.Unlock()
	return err
}

// waitReplies returns once every queued reply has been written (or its
// write failed).
func (c *conn) waitReplies() {
	c.wmu.Lock()
	for c.flushing {
		c.flushed.Wait()
	}
	c.wmu.Unlock()
}
