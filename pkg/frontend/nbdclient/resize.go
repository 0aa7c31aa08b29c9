package nbdclient

import (
	"context"
	"fmt"
	"time"

	"k8s.io/klog/v2"
)

// probeGrace bounds how long a size probe waits for the server to close
// its connection after NBD_CMD_DISC.
const probeGrace = time.Second

// RefreshSize asks the server for the export's current size, on a
// connection of its own that it closes with NBD_CMD_DISC, and makes
// Size return it when the export grew. It returns the new Size. An
// export found smaller fails with ErrSizeChanged and changes nothing;
// so does any failure to connect, which is not retried: the caller
// decides when to ask again. Requests in flight are not disturbed.
func (c *Client) RefreshSize(ctx context.Context) (int64, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	size, err := c.probeSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("refresh size of nbd export %q: %w", c.opts.ExportName, err)
	}
	return c.grow(size), nil
}

// probeSize negotiates once on a new connection and disconnects.
// negotiate refuses an export smaller than Size with ErrSizeChanged.
func (c *Client) probeSize(ctx context.Context) (int64, error) {
	s, err := c.connect(ctx)
	if err != nil {
		return 0, err
	}
	go s.readLoop() // notices the server closing after NBD_CMD_DISC
	s.disconnect(probeGrace)
	return int64(s.info.size), nil
}

// grow raises Size to size, unless it is already as large, and returns
// Size.
func (c *Client) grow(size int64) int64 {
	for {
		old := c.Size()
		if size <= old {
			return old
		}
		if c.size.CompareAndSwap(old, size) {
			klog.InfoS("NBD export grew", "volume", c.opts.ExportName, "oldSize", old, "size", size)
			return size
		}
	}
}
