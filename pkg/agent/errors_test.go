package agent

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/replication"
)

func TestCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{invalidField("volume_id", "empty"), codes.InvalidArgument},
		{fmt.Errorf("volume v: %w", ErrNotFound), codes.NotFound},
		{fmt.Errorf("create: %w", blockstore.ErrExists), codes.AlreadyExists},
		{fmt.Errorf("volume v: %w", ErrBusy), codes.Aborted},
		{ErrShuttingDown, codes.Unavailable},
		{fmt.Errorf("x: %w", ErrNoLocalReplica), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", ErrStaleLayout), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", ErrLayoutConflict), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", replication.ErrInvalidLayout), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", blockstore.ErrStaleEpoch), codes.FailedPrecondition},
		{fmt.Errorf("checksum: %w", context.Canceled), codes.Canceled},
		{fmt.Errorf("size data file: %w", syscall.EFBIG), codes.OutOfRange},
		{fmt.Errorf("x: %w", replication.ErrIncomplete), codes.FailedPrecondition},
		{errors.New("disk on fire"), codes.Internal},
	}
	for _, tt := range tests {
		if got := codeOf(tt.err); got != tt.want {
			t.Errorf("codeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestSecondOperationOnVolumeIsBusy(t *testing.T) {
	a := &Agent{inflight: map[string]struct{}{}}
	release, err := a.begin("vol-1")
	if err != nil {
		t.Fatal(err)
	}

	_, busy := a.begin("vol-1")
	_, other := a.begin("vol-2")
	release()
	again, free := a.begin("vol-1")

	if !errors.Is(busy, ErrBusy) || other != nil || free != nil {
		t.Errorf("begin: same volume %v, other volume %v, after release %v; want %v, nil, nil", busy, other, free, ErrBusy)
	}
	if again != nil {
		again()
	}
}
