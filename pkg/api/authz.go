package api

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/certs"
)

// Errors of authorization. Compare with errors.Is.
var (
	// ErrUnauthenticated means the call came without a verified client
	// certificate naming a trireme identity.
	ErrUnauthenticated = errors.New("no verified trireme client certificate")
	// ErrDenied means the caller's identity may not make the call.
	ErrDenied = errors.New("permission denied")
	// ErrNoRule means the method has no authorization rule, so nobody
	// may call it.
	ErrNoRule = errors.New("no authorization rule for the method")
)

// CallerOf returns the identity of the verified client certificate of
// the call ctx belongs to.
func CallerOf(ctx context.Context) (certs.Peer, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return certs.Peer{}, ErrUnauthenticated
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return certs.Peer{}, ErrUnauthenticated
	}
	caller, err := certs.PeerFromState(info.State)
	if err != nil {
		return certs.Peer{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return caller, nil
}

// Rule decides whether caller may make one call with request req. It
// returns nil to admit the call, or an error wrapping ErrDenied (or the
// error of a lookup the decision needed).
type Rule func(ctx context.Context, caller certs.Peer, req any) error

// Rules maps gRPC full method names to their rules. A method missing
// from the map is refused: a new RPC is callable only once it has a rule.
type Rules map[string]Rule

// AllowRoles returns a rule admitting callers of the given roles.
func AllowRoles(roles ...certs.Role) Rule {
	check := certs.AllowRoles(roles...)
	return func(_ context.Context, caller certs.Peer, _ any) error {
		if err := check(caller); err != nil {
			return fmt.Errorf("%w: %w", ErrDenied, err)
		}
		return nil
	}
}

// Authorize decides one call: the error is a gRPC status, UNAUTHENTICATED
// without a client identity, PERMISSION_DENIED when the rule refuses the
// identity, the rule's own lookup failures as UNAVAILABLE.
func (r Rules) Authorize(ctx context.Context, method string, req any) error {
	caller, err := CallerOf(ctx)
	if err != nil {
		return refuse(method, caller, codes.Unauthenticated, err)
	}
	rule, ok := r[method]
	if !ok {
		return refuse(method, caller, codes.PermissionDenied, fmt.Errorf("%w %s", ErrNoRule, method))
	}
	switch err := rule(ctx, caller, req); {
	case err == nil:
		return nil
	case errors.Is(err, ErrDenied):
		return refuse(method, caller, codes.PermissionDenied, err)
	default:
		return refuse(method, caller, codes.Unavailable, fmt.Errorf("authorize: %w", err))
	}
}

func refuse(method string, caller certs.Peer, code codes.Code, err error) error {
	klog.InfoS("Refused an API call", "method", method, "caller", caller.String(), "code", code, "err", err)
	return status.Error(code, err.Error())
}

// UnaryInterceptor applies the rules before every unary call's handler
// runs.
func (r Rules) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := r.Authorize(ctx, info.FullMethod, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor applies the rules to streaming calls, with no
// request to look at.
func (r Rules) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := r.Authorize(ss.Context(), info.FullMethod, nil); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

// ServerOptions returns the gRPC server options of mutual TLS with b and
// the rules, or of plain TCP and no authorization when b is nil (the
// insecure mode), followed by the limits of Limits.
func ServerOptions(b *certs.Bundle, allow func(certs.Peer) error, rules Rules) []grpc.ServerOption {
	opts := []grpc.ServerOption{ServerCredentials(b, allow)}
	if b != nil {
		opts = append(opts, grpc.ChainUnaryInterceptor(rules.UnaryInterceptor()),
			grpc.ChainStreamInterceptor(rules.StreamInterceptor()))
	}
	return append(opts, Limits()...)
}
