package csi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/store"
)

// errorCodes maps the controller's sentinel errors to the codes of the
// CSI spec, first match wins.
var errorCodes = []struct {
	err  error
	code codes.Code
}{
	{controller.ErrInvalid, codes.InvalidArgument},
	{store.ErrInvalid, codes.InvalidArgument},
	{controller.ErrVolumeNotFound, codes.NotFound},
	{controller.ErrNodeNotFound, codes.NotFound},
	{controller.ErrAlreadyExistsDifferent, codes.AlreadyExists},
	{controller.ErrNoPlacement, codes.ResourceExhausted},
	{controller.ErrCapacityOutOfRange, codes.OutOfRange},
	{controller.ErrPublishedElsewhere, codes.FailedPrecondition},
	{controller.ErrVolumeInUse, codes.FailedPrecondition},
	{controller.ErrNodeUnavailable, codes.Unavailable},
	{controller.ErrBusy, codes.Aborted},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus turns an error of package controller into a gRPC status with
// the error's message. A sentinel decides before any status the error
// wraps (a node's answer is the node's business, not the caller's); a bare
// status error passes through unchanged.
func toStatus(err error) error {
	for _, ec := range errorCodes {
		if errors.Is(err, ec.err) {
			return status.Error(ec.code, err.Error())
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
