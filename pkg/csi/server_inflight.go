package csi

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// inflight admits one operation per key (a volume id or name) at a time.
// A second concurrent operation on the same key gets ABORTED, as the CSI
// spec suggests, and the CO retries it later.
type inflight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func newInflight() *inflight {
	return &inflight{keys: map[string]struct{}{}}
}

// begin claims key, or fails with ABORTED while another operation holds
// it. The caller must call the returned function when done.
func (f *inflight) begin(key string) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, busy := f.keys[key]; busy {
		return nil, status.Errorf(codes.Aborted, "an operation on %s is already in progress", key)
	}
	f.keys[key] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, key)
		f.mu.Unlock()
	}, nil
}
