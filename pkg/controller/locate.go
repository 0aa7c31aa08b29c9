package controller

import (
	"context"
	"fmt"

	"github.com/trireme-csi/trireme/pkg/store"
)

// Location says where a volume is served.
type Location struct {
	// Volume is the volume's record: layout and attachment.
	Volume store.Volume
	// PrimaryNBDAddress is host:port of the primary's NBD server.
	PrimaryNBDAddress string
}

// LocateVolume returns the volume's record and the NBD address of its
// primary. The address is known only once the primary has registered with
// this controller process: until then the error wraps ErrNodeUnavailable.
func (c *Controller) LocateVolume(ctx context.Context, id string) (Location, error) {
	v, err := c.GetVolume(ctx, id)
	if err != nil {
		return Location{}, err
	}
	c.members.mu.Lock()
	n, ok := c.members.nodes[v.Layout.Primary]
	c.members.mu.Unlock()
	if !ok {
		return Location{}, fmt.Errorf("locate %s: primary %s has not registered: %w", id, v.Layout.Primary, ErrNodeUnavailable)
	}
	return Location{Volume: v, PrimaryNBDAddress: n.NBDAddress}, nil
}
