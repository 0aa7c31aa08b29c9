package csi

import (
	"context"
	"strings"
	"sync"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

// TestNodeLogInterceptor checks that every line an RPC logs, its
// handler's included, carries the request id and the volume, and that
// secrets never reach the log.
func TestNodeLogInterceptor(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	logger := funcr.New(func(prefix, args string) {
		mu.Lock()
		lines = append(lines, args)
		mu.Unlock()
	}, funcr.Options{Verbosity: 4})
	ctx := klog.NewContext(context.Background(), logger)
	req := &csipb.NodeStageVolumeRequest{VolumeId: volA, Secrets: map[string]string{"password": "hunter2"}}
	handler := func(ctx context.Context, _ any) (any, error) {
		klog.FromContext(ctx).Info("inside the handler")
		return &csipb.NodeStageVolumeResponse{}, nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodeStageVolume"}
	if _, err := nodeLogInterceptor()(ctx, req, info, handler); err != nil {
		t.Fatal(err)
	}
	if len(lines) != 4 {
		t.Fatalf("%d lines, want request, body, handler and outcome:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, `"requestID"`) || !strings.Contains(l, volA) || strings.Contains(l, "hunter2") {
			t.Errorf("line lacks the request id or volume, or shows a secret: %s", l)
		}
	}
	if !strings.Contains(lines[1], strippedValue) {
		t.Errorf("body does not show the stripped secret: %s", lines[1])
	}
}
