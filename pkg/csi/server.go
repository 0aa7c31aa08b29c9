package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
)

// ErrBadEndpoint means an endpoint is neither unix:///path nor
// tcp://host:port.
var ErrBadEndpoint = errors.New("endpoint must be unix:///path or tcp://host:port")

// ParseEndpoint splits an endpoint into a network and an address for
// net.Listen: unix:///csi/csi.sock (or unix://csi.sock, relative) and
// tcp://127.0.0.1:10000.
func ParseEndpoint(endpoint string) (network, address string, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrBadEndpoint, endpoint, err)
	}
	switch u.Scheme {
	case "unix":
		path := u.Host + u.Path
		if path == "" {
			return "", "", fmt.Errorf("%w: %q has no path", ErrBadEndpoint, endpoint)
		}
		return "unix", path, nil
	case "tcp":
		if _, _, err := net.SplitHostPort(u.Host); err != nil {
			return "", "", fmt.Errorf("%w: %q: %v", ErrBadEndpoint, endpoint, err)
		}
		return "tcp", u.Host, nil
	}
	return "", "", fmt.Errorf("%w: %q", ErrBadEndpoint, endpoint)
}

// Listen listens on endpoint. For a unix socket it removes a stale socket
// left by a previous run (never another kind of file), and makes the new
// one readable and writable by its owner only: the CO's sidecars run as
// the same user.
func Listen(endpoint string) (net.Listener, error) {
	network, addr, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := removeStaleSocket(addr); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(addr), 0o750); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", endpoint, err)
		}
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", endpoint, err)
	}
	if network == "unix" {
		if err := os.Chmod(addr, 0o600); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen on %s: %w", endpoint, err)
		}
	}
	return l, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("stat socket %s: %w", path, err)
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("socket path %s exists and is not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	klog.InfoS("Removed stale socket", "path", path)
	return nil
}

// NewGRPCServer returns a gRPC server that logs every RPC (see
// logInterceptor).
func NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(logInterceptor())}, opts...)...)
}

// Serve serves s on l until ctx is done, then stops it gracefully: calls
// in flight finish, new ones are refused. It returns the server's error,
// or nil after a graceful stop.
func Serve(ctx context.Context, s *grpc.Server, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	klog.InfoS("Stopping gRPC server gracefully", "address", l.Addr())
	s.GracefulStop()
	<-errc
	return nil
}
