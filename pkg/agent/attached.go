package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// attachedExport is one NBD client's view of a primary: the client
// connected at an attachment generation, and the primary admits each of
// its requests only while no later publish has raised the volume's
// generation past it. A frontend left behind on a node that lost its
// attachment therefore cannot write, nor read what the new attachment
// writes (invariant I3). Refusals wrap replication.ErrStaleAttachment and
// nbd.ErrPolicy: the client sees EPERM.
type attachedExport struct {
	*replication.Primary
	generation uint64
}

// enter admits one request; the caller defers x.Leave(x.generation).
func (x *attachedExport) enter() error {
	if err := x.Admit(x.generation); err != nil {
		return fmt.Errorf("%w: %w", err, nbd.ErrPolicy)
	}
	return nil
}

// servingErr tells NBD clients of a primary that stopped serving to send
// their requests again elsewhere (NBD_ESHUTDOWN): the volume has another
// primary, or will have one once the controller answers. Their writes
// were not acknowledged, so sending them again is safe.
func servingErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, replication.ErrDeposed), errors.Is(err, replication.ErrClosed),
		errors.Is(err, replication.ErrUnreachable):
		return fmt.Errorf("%w: %w", err, nbd.ErrShutdown)
	}
	return err
}

// check reports whether a request would be admitted now.
func (x *attachedExport) check() error {
	if err := x.enter(); err != nil {
		return err
	}
	x.Leave(x.generation)
	return nil
}

// ReadAt reads unless the client's attachment is stale.
func (x *attachedExport) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := x.enter(); err != nil {
		return err
	}
	defer x.Leave(x.generation)
	return servingErr(x.Primary.ReadAt(ctx, p, off))
}

// WriteAt writes unless the client's attachment is stale.
func (x *attachedExport) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := x.enter(); err != nil {
		return err
	}
	defer x.Leave(x.generation)
	return servingErr(x.Primary.WriteAt(ctx, p, off, fua))
}

// Flush flushes unless the client's attachment is stale.
func (x *attachedExport) Flush(ctx context.Context) error {
	if err := x.enter(); err != nil {
		return err
	}
	defer x.Leave(x.generation)
	return servingErr(x.Primary.Flush(ctx))
}

// Trim discards unless the client's attachment is stale.
func (x *attachedExport) Trim(ctx context.Context, off, length int64) error {
	if err := x.enter(); err != nil {
		return err
	}
	defer x.Leave(x.generation)
	return servingErr(x.Primary.Trim(ctx, off, length))
}

// WriteZeroes zeroes unless the client's attachment is stale.
func (x *attachedExport) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	if err := x.enter(); err != nil {
		return err
	}
	defer x.Leave(x.generation)
	return servingErr(x.Primary.WriteZeroes(ctx, off, length, fua))
}
