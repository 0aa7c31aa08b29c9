package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/internal/testcerts"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
)

var (
	controllerPeer = certs.Peer{Role: certs.RoleController}
	adminPeer      = certs.Peer{Role: certs.RoleAdmin, Name: "ops"}
	nodePeer       = certs.Peer{Role: certs.RoleNode, Name: "n1"}
	frontendPeer   = certs.Peer{Role: certs.RoleFrontend, Name: "n1"}
)

// TestNodeAPIRules is the Node API's authorization table: every method
// for every role, with the exact code.
func TestNodeAPIRules(t *testing.T) {
	ca := testcerts.CA(t)
	leaf := map[certs.Peer]*certs.Bundle{}
	for _, p := range []certs.Peer{controllerPeer, adminPeer, nodePeer, frontendPeer} {
		leaf[p] = testcerts.Bundle(t, ca, p)
	}
	mutating := []string{apiv1.Node_CreateReplica_FullMethodName, apiv1.Node_DeleteReplica_FullMethodName,
		apiv1.Node_SetLayout_FullMethodName, apiv1.Node_ExpandReplica_FullMethodName}
	reading := []string{apiv1.Node_GetVolume_FullMethodName, apiv1.Node_ListVolumes_FullMethodName,
		apiv1.Node_ChecksumReplica_FullMethodName}
	want := map[certs.Peer][2]codes.Code{ // mutating, reading
		controllerPeer: {codes.OK, codes.OK},
		adminPeer:      {codes.PermissionDenied, codes.OK},
		nodePeer:       {codes.PermissionDenied, codes.PermissionDenied},
		frontendPeer:   {codes.PermissionDenied, codes.PermissionDenied},
	}
	rules := nodeAPIRules()
	for p, codesOf := range want {
		ctx := testcerts.Caller(testcerts.Leaf(leaf[p]))
		for i, methods := range [][]string{mutating, reading} {
			for _, m := range methods {
				err := rules.Authorize(ctx, m, nil)
				if got := status.Code(err); got != codesOf[i] {
					t.Errorf("%s calling %s: %v, want %s", p, m, err, codesOf[i])
				}
			}
		}
	}
	err := rules.Authorize(testcerts.Caller(testcerts.Leaf(leaf[nodePeer])), apiv1.Node_SetLayout_FullMethodName, nil)
	if !strings.Contains(err.Error(), "a node agent cannot change volume records") {
		t.Errorf("node calling SetLayout: %v, want the reason", err)
	}
	if err := rules.Authorize(testcerts.Caller(nil), apiv1.Node_ListVolumes_FullMethodName, nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no certificate: %v, want Unauthenticated", err)
	}
	if err := rules.Authorize(context.Background(), apiv1.Node_ListVolumes_FullMethodName, nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("plain connection: %v, want Unauthenticated", err)
	}
}

// TestNodeAPIRulesCoverEveryMethod keeps the table complete: a method
// without a rule is refused to everyone, so a new RPC must get one.
func TestNodeAPIRulesCoverEveryMethod(t *testing.T) {
	rules := nodeAPIRules()
	for _, m := range apiv1.Node_ServiceDesc.Methods {
		name := "/" + apiv1.Node_ServiceDesc.ServiceName + "/" + m.MethodName
		if _, ok := rules[name]; !ok {
			t.Errorf("no rule for %s", name)
		}
	}
	ca := testcerts.CA(t)
	ctx := testcerts.Caller(testcerts.Leaf(testcerts.Bundle(t, ca, controllerPeer)))
	if err := rules.Authorize(ctx, "/trireme.v1.Node/Format", nil); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a method without a rule: %v, want PermissionDenied", err)
	}
}

// TestExportAuthorization: an operator opens any export under any name; a
// frontend only a volume attached to its own node, under a generation the
// controller handed out; a node certificate none.
func TestExportAuthorization(t *testing.T) {
	ca := testcerts.CA(t)
	published := map[string]attachment{"vol-a": {"n1", 3}, "vol-b": {"n2", 1}}
	e := newExportAuthorizer(func(_ context.Context, id string) (attachment, error) {
		at, ok := published[id]
		if !ok {
			return attachment{}, errors.New("not found")
		}
		return at, nil
	})
	for _, tc := range []struct {
		peer   certs.Peer
		export string
		ok     bool
	}{
		{adminPeer, "vol-b", true},
		{adminPeer, "anything", true},
		{frontendPeer, "vol-a?generation=3", true},
		{frontendPeer, "vol-a?generation=2", true},  // the primary fences it
		{frontendPeer, "vol-a", false},              // the bare id: never fenced
		{frontendPeer, "vol-a?generation=4", false}, // not handed out yet
		{frontendPeer, "vol-b?generation=1", false},
		{frontendPeer, "vol-c?generation=1", false},
		{frontendPeer, "vol-a?generation=x", false},
		{certs.Peer{Role: certs.RoleFrontend, Name: "n2"}, "vol-b?generation=1", true},
		{nodePeer, "vol-a", false},
		{controllerPeer, "vol-a", false},
	} {
		err := e.authorize(testcerts.Leaf(testcerts.Bundle(t, ca, tc.peer)), tc.export)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errExportDenied)) {
			t.Errorf("%s opening %q: %v, want allowed %v", tc.peer, tc.export, err, tc.ok)
		}
	}
	if err := e.authorize(nil, "vol-a"); !errors.Is(err, errExportDenied) {
		t.Errorf("no certificate: %v", err)
	}
}

// TestExportAuthorizationFollowsTheAttachment: what the controller said
// admits the node it named for publishedTTL only, so a volume moved to
// another node is refused to the old node's frontend soon after; the new
// node's frontend is admitted at once.
func TestExportAuthorizationFollowsTheAttachment(t *testing.T) {
	ca := testcerts.CA(t)
	node := "n1"
	e := newExportAuthorizer(func(context.Context, string) (attachment, error) { return attachment{node, 1}, nil })
	now := time.Unix(1000, 0)
	e.now = func() time.Time { return now }
	n1 := testcerts.Leaf(testcerts.Bundle(t, ca, frontendPeer))
	n2 := testcerts.Leaf(testcerts.Bundle(t, ca, certs.Peer{Role: certs.RoleFrontend, Name: "n2"}))
	if err := e.authorize(n1, "vol-a?generation=1"); err != nil {
		t.Fatal(err)
	}
	node = "n2"
	if err := e.authorize(n2, "vol-a?generation=1"); err != nil {
		t.Fatalf("the new node at once: %v", err)
	}
	if err := e.authorize(n1, "vol-a?generation=1"); !errors.Is(err, errExportDenied) {
		t.Fatalf("the old node once the controller named the new one: %v, want denied", err)
	}
	node = "n1"
	if err := e.authorize(n1, "vol-a?generation=1"); err != nil {
		t.Fatal(err)
	}
	node = "n2"
	if err := e.authorize(n1, "vol-a?generation=1"); err != nil {
		t.Fatalf("within the TTL of the answer naming it: %v", err)
	}
	now = now.Add(publishedTTL)
	if err := e.authorize(n1, "vol-a?generation=1"); !errors.Is(err, errExportDenied) {
		t.Fatalf("after the volume moved and the TTL passed: %v, want denied", err)
	}
}
