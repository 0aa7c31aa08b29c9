package nbdclient

import (
	"context"
	"fmt"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// zeroChunk is the size of the zero buffer written when the server
// cannot WRITE_ZEROES.
const zeroChunk = 1 << 20

// ReadAt fills p from offset off.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := c.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	return c.split(off, int64(len(p)), int64(c.info.maxPayload), func(o, n int64) error {
		buf := p[o-off : o-off+n]
		return c.do(ctx, newCall(request{typ: nbdwire.CmdRead, offset: uint64(o), length: uint32(n)}, nil, buf))
	})
}

// WriteAt writes p at offset off. With fua set the data is on stable
// storage when WriteAt returns.
func (c *Client) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := c.checkWrite(off, int64(len(p))); err != nil {
		return err
	}
	flags := c.fuaFlag(fua)
	err := c.split(off, int64(len(p)), int64(c.info.maxPayload), func(o, n int64) error {
		req := request{typ: nbdwire.CmdWrite, flags: flags, offset: uint64(o), length: uint32(n)}
		return c.do(ctx, newCall(req, p[o-off:o-off+n], nil))
	})
	return c.emulateFUA(ctx, err, fua)
}

// Flush returns once every write completed before it is on stable
// storage. Against a server without a write cache it does nothing.
func (c *Client) Flush(ctx context.Context) error {
	if !c.info.has(nbdwire.TflagSendFlush) {
		return nil
	}
	if err := c.do(ctx, newCall(request{typ: nbdwire.CmdFlush}, nil, nil)); err != nil {
		return fmt.Errorf("nbd flush: %w", err)
	}
	return nil
}

// Trim tells the server the range is unused. Later reads of it may
// return anything; use WriteZeroes to discard and read back zeroes.
func (c *Client) Trim(ctx context.Context, off, length int64) error {
	if err := c.checkWrite(off, length); err != nil || !c.info.has(nbdwire.TflagSendTrim) {
		return err
	}
	return c.split(off, length, maxZeroesLength, func(o, n int64) error {
		return c.do(ctx, newCall(request{typ: nbdwire.CmdTrim, offset: uint64(o), length: uint32(n)}, nil, nil))
	})
}

// WriteZeroes makes the range read as zeroes; the server may deallocate
// it. Servers bound its length by the maximum block size, like a write's. Servers without NBD_CMD_WRITE_ZEROES are sent zero-filled writes.
func (c *Client) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	if err := c.checkWrite(off, length); err != nil {
		return err
	}
	if !c.info.has(nbdwire.TflagSendWriteZeroes) {
		return c.writeZeroBuffers(ctx, off, length, fua)
	}
	flags := c.fuaFlag(fua)
	err := c.split(off, length, int64(c.info.maxPayload), func(o, n int64) error {
		req := request{typ: nbdwire.CmdWriteZeroes, flags: flags, offset: uint64(o), length: uint32(n)}
		return c.do(ctx, newCall(req, nil, nil))
	})
	return c.emulateFUA(ctx, err, fua)
}

// writeZeroBuffers zeroes a range with ordinary writes.
func (c *Client) writeZeroBuffers(ctx context.Context, off, length int64, fua bool) error {
	zeroes := make([]byte, min(length, zeroChunk))
	err := c.split(off, length, zeroChunk, func(o, n int64) error {
		return c.WriteAt(ctx, zeroes[:n], o, false)
	})
	if err != nil || !fua {
		return err
	}
	return c.Flush(ctx)
}

// split runs op over [off, off+length) in pieces of at most max bytes,
// stopping at the first error, which it wraps with the piece's range.
func (c *Client) split(off, length, max int64, op func(o, n int64) error) error {
	for o := off; o < off+length; o += max {
		n := min(max, off+length-o)
		if err := op(o, n); err != nil {
			return fmt.Errorf("nbd request at %d+%d: %w", o, n, err)
		}
	}
	return nil
}

// fuaFlag returns the FUA command flag when it is wanted and offered.
func (c *Client) fuaFlag(fua bool) uint16 {
	if fua && c.info.has(nbdwire.TflagSendFUA) {
		return nbdwire.CmdFlagFUA
	}
	return 0
}

// emulateFUA follows a successful write with a flush when FUA was asked
// for but the server does not offer it.
func (c *Client) emulateFUA(ctx context.Context, err error, fua bool) error {
	if err != nil || !fua || c.info.has(nbdwire.TflagSendFUA) {
		return err
	}
	return c.Flush(ctx)
}

// checkRange refuses a request that reaches past the export.
func (c *Client) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off > c.Size() || length > c.Size()-off {
		return fmt.Errorf("%w: %d+%d, export is %d bytes", ErrOutOfRange, off, length, c.Size())
	}
	return nil
}

// checkWrite refuses a modification of a read-only export, or one that
// reaches past it.
func (c *Client) checkWrite(off, length int64) error {
	if c.ReadOnly() {
		return ErrReadOnly
	}
	return c.checkRange(off, length)
}
