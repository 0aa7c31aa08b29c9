package csi

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/frontend"
)

// Errors of the Node service and of the VolumeLocator it asks. Callers
// compare with errors.Is; nodeStatus turns them into gRPC codes.
var (
	// ErrVolumeNotFound means the controller knows no such volume.
	ErrVolumeNotFound = errors.New("volume not found")
	// ErrLocatorUnavailable means the volume's location could not be
	// learnt: the controller or the primary cannot be reached yet.
	ErrLocatorUnavailable = errors.New("volume location unavailable")

	errNotStaged        = errors.New("volume is not staged on this node")
	errStagedElsewhere  = errors.New("volume is staged at another path")
	errStagingNotReady  = errors.New("staging path does not hold the volume")
	errIncompatible     = errors.New("volume is already staged or published with other options")
	errStillPublished   = errors.New("volume is still published")
	errNotAtPath        = errors.New("volume is not at the given path")
	errNotPublishedHere = errors.New("volume is not published to this node")
	errTooManyVolumes   = errors.New("node stages as many volumes as it may")
	errAccessTypeChange = errors.New("access type differs from the staged one")
	errInvalidTarget    = errors.New("invalid target path")
	errAccessTypeDiffer = errors.New("volume_capability access type differs from the staged volume's")
	errNotAttached      = errors.New("volume is staged but not attached now")
	errCapacity         = errors.New("volume size is outside the capacity range")
	errReadOnlyFS       = errors.New("filesystem is mounted read-only and cannot grow")
)

// nodeErrorCodes maps the Node service's errors to CSI codes, first match
// wins.
var nodeErrorCodes = []struct {
	err  error
	code codes.Code
}{
	{ErrVolumeNotFound, codes.NotFound},
	{errInvalidTarget, codes.InvalidArgument},
	{errAccessTypeDiffer, codes.InvalidArgument},
	{errCapacity, codes.OutOfRange},
	{errReadOnlyFS, codes.FailedPrecondition},
	{errNotAttached, codes.Unavailable},
	{errNotAtPath, codes.NotFound},
	{ErrLocatorUnavailable, codes.Unavailable},
	{errNotStaged, codes.FailedPrecondition},
	{errStagedElsewhere, codes.FailedPrecondition},
	{errStagingNotReady, codes.FailedPrecondition},
	{errStillPublished, codes.FailedPrecondition},
	{errNotPublishedHere, codes.FailedPrecondition},
	{errAccessTypeChange, codes.FailedPrecondition},
	{errIncompatible, codes.AlreadyExists},
	{errTooManyVolumes, codes.ResourceExhausted},
	{frontend.ErrNoFreeLoop, codes.ResourceExhausted},
	{frontend.ErrDeviceBusy, codes.FailedPrecondition},
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// nodeStatus turns an error of the Node service into a gRPC status with
// the error's message; a status error passes through unchanged.
func nodeStatus(err error) error {
	for _, ec := range nodeErrorCodes {
		if errors.Is(err, ec.err) {
			return status.Error(ec.code, err.Error())
		}
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
