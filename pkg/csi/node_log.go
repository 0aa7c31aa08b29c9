package csi

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// NewNodeGRPCServer returns a gRPC server for the Node and Identity
// services. Like NewGRPCServer it logs every RPC with a request id, the
// volume and the outcome (the request, secrets stripped, at V(4)); it
// also hands the handlers a logger carrying the request id, so that
// every line an operation logs can be traced to its request.
func NewNodeGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(nodeLogInterceptor())}, opts...)...)
}

func nodeLogInterceptor() grpc.UnaryServerInterceptor {
	ids := newRequestIDs()
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		id, start := ids.newID(), time.Now()
		level := logLevel(info.FullMethod)
		logger := klog.FromContext(ctx).WithValues("requestID", id, "volume", volumeOf(req))
		logger.V(int(level)).Info("CSI request", "method", info.FullMethod)
		logger.V(4).Info("CSI request body", "request", sanitize(req))
		resp, err := handler(klog.NewContext(ctx, logger), req)
		keys := []any{"method", info.FullMethod, "code", status.Code(err), "duration", time.Since(start)}
		if err != nil {
			logger.V(int(level)).Info("CSI request failed", append(keys, "err", status.Convert(err).Message())...)
			return resp, err
		}
		logger.V(int(level)).Info("CSI request done", keys...)
		return resp, nil
	}
}
