// Package csi is the CSI edge of Trireme: the Identity and Controller
// services the controller serves (and, in node*.go, the Node service the
// node agents serve). Handlers validate requests (validate.go), call
// package controller, and turn its sentinel errors into the exact gRPC
// codes the CSI spec asks for; no code is chosen below this package.
package csi

import (
	"context"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// DriverName is the CSI driver name Trireme registers under.
const DriverName = "csi.trireme.dev"

// IdentityServer serves the CSI Identity service.
type IdentityServer struct {
	csipb.UnimplementedIdentityServer
	// Version is reported as the vendor version.
	Version string
	// Controller says whether this process serves the Controller service,
	// which GetPluginCapabilities then advertises.
	Controller bool
	// Ready reports readiness for Probe; nil means always ready.
	Ready func() bool
}

// GetPluginInfo implements csipb.IdentityServer.
func (s *IdentityServer) GetPluginInfo(context.Context, *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	return &csipb.GetPluginInfoResponse{Name: DriverName, VendorVersion: s.Version}, nil
}

// GetPluginCapabilities implements csipb.IdentityServer. Volumes are
// reachable from every node, but CreateVolume honours accessibility
// requirements for placement, hence VOLUME_ACCESSIBILITY_CONSTRAINTS.
// Volumes grow while in use: ONLINE volume expansion.
func (s *IdentityServer) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	resp := &csipb.GetPluginCapabilitiesResponse{}
	if s.Controller {
		resp.Capabilities = append(resp.Capabilities,
			pluginCap(csipb.PluginCapability_Service_CONTROLLER_SERVICE),
			pluginCap(csipb.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
			&csipb.PluginCapability{Type: &csipb.PluginCapability_VolumeExpansion_{
				VolumeExpansion: &csipb.PluginCapability_VolumeExpansion{Type: csipb.PluginCapability_VolumeExpansion_ONLINE},
			}})
	}
	return resp, nil
}

func pluginCap(t csipb.PluginCapability_Service_Type) *csipb.PluginCapability {
	return &csipb.PluginCapability{Type: &csipb.PluginCapability_Service_{
		Service: &csipb.PluginCapability_Service{Type: t},
	}}
}

// Probe implements csipb.IdentityServer.
func (s *IdentityServer) Probe(context.Context, *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	ready := s.Ready == nil || s.Ready()
	return &csipb.ProbeResponse{Ready: wrapperspb.Bool(ready)}, nil
}
