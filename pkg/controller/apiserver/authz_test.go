package apiserver

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/internal/testcerts"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/controller"
)

// TestControllerAPIRules is the controller API's authorization table.
func TestControllerAPIRules(t *testing.T) {
	primaries := map[string]string{"vol-1": "n1"}
	rules := Rules(func(_ context.Context, id string) (string, error) {
		p, ok := primaries[id]
		if !ok {
			return "", fmt.Errorf("volume %s: %w", id, controller.ErrVolumeNotFound)
		}
		return p, nil
	})
	n1 := certs.Peer{Role: certs.RoleNode, Name: "n1"}
	n2 := certs.Peer{Role: certs.RoleNode, Name: "n2"}
	ctrl := certs.Peer{Role: certs.RoleController}
	admin := certs.Peer{Role: certs.RoleAdmin, Name: "ops"}
	fe := certs.Peer{Role: certs.RoleFrontend, Name: "n1"}

	register := &apiv1.RegisterNodeRequest{NodeId: "n1"}
	heartbeat := &apiv1.HeartbeatRequest{NodeId: "n1"}
	faulted := &apiv1.ReportReplicaFaultedRequest{VolumeId: "vol-1", NodeId: "n2"}
	synced := &apiv1.ReportReplicaSyncedRequest{VolumeId: "vol-1", NodeId: "n2"}
	unknown := &apiv1.ReportReplicaFaultedRequest{VolumeId: "vol-9", NodeId: "n2"}
	locate := &apiv1.LocateVolumeRequest{VolumeId: "vol-1"}
	const (
		ok     = codes.OK
		denied = codes.PermissionDenied
	)
	for _, tc := range []struct {
		caller certs.Peer
		method string
		req    any
		want   codes.Code
	}{
		{n1, apiv1.Registry_RegisterNode_FullMethodName, register, ok},
		{n2, apiv1.Registry_RegisterNode_FullMethodName, register, denied},
		{ctrl, apiv1.Registry_RegisterNode_FullMethodName, register, denied},
		{admin, apiv1.Registry_RegisterNode_FullMethodName, register, denied},
		{fe, apiv1.Registry_RegisterNode_FullMethodName, register, denied},
		{n1, apiv1.Registry_Heartbeat_FullMethodName, heartbeat, ok},
		{n2, apiv1.Registry_Heartbeat_FullMethodName, heartbeat, denied},
		{admin, apiv1.Registry_Heartbeat_FullMethodName, heartbeat, denied},
		{n1, apiv1.Controller_ReportReplicaFaulted_FullMethodName, faulted, ok},
		{n2, apiv1.Controller_ReportReplicaFaulted_FullMethodName, faulted, denied},
		{n1, apiv1.Controller_ReportReplicaFaulted_FullMethodName, unknown, denied},
		{admin, apiv1.Controller_ReportReplicaFaulted_FullMethodName, faulted, denied},
		{ctrl, apiv1.Controller_ReportReplicaFaulted_FullMethodName, faulted, denied},
		{fe, apiv1.Controller_ReportReplicaFaulted_FullMethodName, faulted, denied},
		{n1, apiv1.Controller_ReportReplicaSynced_FullMethodName, synced, ok},
		{n2, apiv1.Controller_ReportReplicaSynced_FullMethodName, synced, denied},
		{admin, apiv1.Controller_ReportReplicaSynced_FullMethodName, synced, denied},
		{n2, apiv1.Registry_LocateVolume_FullMethodName, locate, ok},
		{admin, apiv1.Registry_LocateVolume_FullMethodName, locate, ok},
		{fe, apiv1.Registry_LocateVolume_FullMethodName, locate, denied},
		{ctrl, apiv1.Registry_LocateVolume_FullMethodName, locate, denied},
		{n1, "/trireme.v1.Controller/DeleteVolume", locate, denied},
	} {
		ca := testcerts.CA(t)
		ctx := testcerts.Caller(testcerts.Leaf(testcerts.Bundle(t, ca, tc.caller)))
		if got := status.Code(rules.Authorize(ctx, tc.method, tc.req)); got != tc.want {
			t.Errorf("%s calling %s with %v: %s, want %s", tc.caller, tc.method, tc.req, got, tc.want)
		}
	}
}

// TestControllerAPIRulesCoverEveryMethod: every method of both services
// has a rule, since one without is refused to everyone.
func TestControllerAPIRulesCoverEveryMethod(t *testing.T) {
	rules := Rules(nil)
	for _, sd := range []struct {
		name    string
		methods []string
	}{
		{apiv1.Registry_ServiceDesc.ServiceName, methodNames(apiv1.Registry_ServiceDesc.Methods)},
		{apiv1.Controller_ServiceDesc.ServiceName, methodNames(apiv1.Controller_ServiceDesc.Methods)},
	} {
		for _, m := range sd.methods {
			if _, ok := rules["/"+sd.name+"/"+m]; !ok {
				t.Errorf("no rule for /%s/%s", sd.name, m)
			}
		}
	}
}

func methodNames(ms []grpc.MethodDesc) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.MethodName)
	}
	return out
}
