package demo

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRetryRetriesOnlyPassingFailures(t *testing.T) {
	unavailable := fmt.Errorf("create volume: %w", status.Error(codes.Unavailable, "node busy"))
	invalid := status.Error(codes.InvalidArgument, "bad size")
	tests := []struct {
		name      string
		errs      []error // what each call returns; nil after the last
		wantCalls int
		wantErr   error
	}{
		{"succeeds at once", nil, 1, nil},
		{"succeeds after a passing failure", []error{unavailable}, 2, nil},
		{"gives up on a final failure", []error{invalid}, 1, invalid},
		{"gives up after retryAttempts", []error{unavailable, unavailable, unavailable, unavailable, unavailable, unavailable},
			retryAttempts, unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, retried := 0, 0
			err := retry(context.Background(), 0, func() error {
				calls++
				if calls <= len(tt.errs) {
					return tt.errs[calls-1]
				}
				return nil
			}, func(error) { retried++ })
			if calls != tt.wantCalls || err != tt.wantErr || retried != calls-1 {
				t.Errorf("retry: %d calls, %d retried, err %v; want %d calls, %d retried, err %v",
					calls, retried, err, tt.wantCalls, tt.wantCalls-1, tt.wantErr)
			}
		})
	}
}
