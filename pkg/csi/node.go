package csi

import (
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"sync"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/trireme-csi/trireme/pkg/frontend"
)

// DriverZoneKey is the driver's own topology key; node agents report
// their zone under it beside the well-known zone label.
const DriverZoneKey = "topology.trireme.dev/zone"

// Mounter is what the Node service needs of k8s.io/mount-utils: mounts,
// and formatting a blank device before its first mount.
// *mount.SafeFormatAndMount implements it.
type Mounter interface {
	mount.Interface
	FormatAndMount(source, target, fstype string, options []string) error
}

// Attached is a volume presented as a block device on this node;
// *frontend.Attachment implements it.
type Attached interface {
	Device() string
	Detach(ctx context.Context) error
	// Resize grows the device to the volume's current size, when the
	// volume grew, and returns the device's size in bytes.
	Resize(ctx context.Context) (int64, error)
}

// FilesystemResizer grows the filesystem on a device to fill it, online:
// ext4 with resize2fs on the device, xfs with xfs_growfs on the mount
// point. *mount.ResizeFs implements it.
type FilesystemResizer interface {
	Resize(devicePath, deviceMountPath string) (bool, error)
}

// Attacher presents a volume as a block device; frontend.Attach in
// production.
type Attacher func(ctx context.Context, opts frontend.AttachOptions) (Attached, error)

// VolumeHealth says how a volume's replicas are doing.
type VolumeHealth struct {
	// Degraded is true while fewer replicas than the volume has are in
	// sync.
	Degraded bool
	// Message describes the replicas, for operators.
	Message string
}

// VolumeLocator finds volumes. Its errors wrap ErrVolumeNotFound for a
// volume the controller does not know, and ErrLocatorUnavailable when the
// answer cannot be had now.
type VolumeLocator interface {
	// PrimaryAddress returns host:port of the NBD server of the volume's
	// current primary. The frontend calls it on every reconnection, so
	// it follows failovers.
	PrimaryAddress(ctx context.Context, volumeID string) (string, error)
	// PublishedNode returns the node ControllerPublishVolume attached the
	// volume to, or "" when it is attached nowhere, and the attachment
	// generation the controller recorded for that publish.
	PublishedNode(ctx context.Context, volumeID string) (node string, generation uint64, err error)
	// Health reports whether the volume runs degraded.
	Health(ctx context.Context, volumeID string) (VolumeHealth, error)
}

// NodeConfig configures a NodeServer.
type NodeConfig struct {
	// NodeID is the CSI node id. Required.
	NodeID string
	// Topology is the node's accessible topology segment.
	Topology map[string]string
	// MaxVolumes is the most volumes the node stages; zero means no limit
	// is reported.
	MaxVolumes int64
	// StateDir holds one record per staged volume. Required.
	StateDir string
	// MountDir holds the frontend's FUSE mounts. Required.
	MountDir string
	// Locator finds volumes' primaries and health. Required.
	Locator VolumeLocator
	// Mounter mounts; nil means the host's mount and mkfs tools.
	Mounter Mounter
	// Attach attaches volumes; nil means frontend.Attach.
	Attach Attacher
	// Resizer grows filesystems; nil means the host's resize2fs and
	// xfs_growfs.
	Resizer FilesystemResizer
	// IOTimeout bounds how long one I/O waits for a primary across
	// reconnections; zero means the frontend's default.
	IOTimeout time.Duration
	// FrontendTLS, when set, is the client configuration the frontend
	// opens volumes with on their primaries (NBD STARTTLS); nil means
	// plain TCP.
	FrontendTLS *tls.Config
}

// NodeServer serves the CSI Node service: it attaches volumes through
// the FUSE and loop frontend, formats and mounts them at staging paths,
// and binds them into pods. It stages only volumes that
// ControllerPublishVolume attached to this node.
//
// Known limits:
//   - The attachment generation ControllerPublishVolume returns in the
//     publish context is not sent to the primary: the NBD protocol the
//     frontend speaks has no place for it yet, so a frontend left on a
//     node that lost its attachment is not fenced by the data plane.
//   - The FUSE servers run in the agent's process; see Recover for what
//     an agent restart costs the pods.
type NodeServer struct {
	csipb.UnimplementedNodeServer
	cfg      NodeConfig
	state    stateStore
	inflight *inflight

	mu       sync.Mutex // guards staged and attached
	staged   map[string]*stageRecord
	attached map[string]Attached
}

// NewNodeServer returns a Node service with no volume staged; Restore
// brings back the volumes a previous run staged.
func NewNodeServer(cfg NodeConfig) (*NodeServer, error) {
	switch {
	case cfg.NodeID == "":
		return nil, fmt.Errorf("node service: node id is required")
	case cfg.StateDir == "" || cfg.MountDir == "":
		return nil, fmt.Errorf("node service: state and mount directories are required")
	case cfg.Locator == nil:
		return nil, fmt.Errorf("node service: a volume locator is required")
	}
	if cfg.Mounter == nil {
		cfg.Mounter = newHostMounter()
	}
	if cfg.Attach == nil {
		cfg.Attach = attachFrontend
	}
	if cfg.Resizer == nil {
		cfg.Resizer = mount.NewResizeFs(exec.New())
	}
	return &NodeServer{
		cfg: cfg, state: stateStore{dir: cfg.StateDir}, inflight: newInflight(),
		staged: map[string]*stageRecord{}, attached: map[string]Attached{},
	}, nil
}

func attachFrontend(ctx context.Context, opts frontend.AttachOptions) (Attached, error) {
	a, err := frontend.Attach(ctx, opts)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// nodeCaps are the capabilities advertised: each one works.
var nodeCaps = []csipb.NodeServiceCapability_RPC_Type{
	csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csipb.NodeServiceCapability_RPC_VOLUME_CONDITION,
	csipb.NodeServiceCapability_RPC_EXPAND_VOLUME,
}

// NodeGetCapabilities implements csipb.NodeServer.
func (s *NodeServer) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	resp := &csipb.NodeGetCapabilitiesResponse{}
	for _, t := range nodeCaps {
		resp.Capabilities = append(resp.Capabilities, &csipb.NodeServiceCapability{
			Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

// NodeGetInfo implements csipb.NodeServer.
func (s *NodeServer) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	resp := &csipb.NodeGetInfoResponse{NodeId: s.cfg.NodeID, MaxVolumesPerNode: s.cfg.MaxVolumes}
	if len(s.cfg.Topology) > 0 {
		resp.AccessibleTopology = &csipb.Topology{Segments: maps.Clone(s.cfg.Topology)}
	}
	return resp, nil
}

// record returns the record of a staged volume, or nil.
func (s *NodeServer) record(volumeID string) *stageRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.staged[volumeID]
}

// remember keeps r and its attachment as staged, and persists r.
func (s *NodeServer) remember(r *stageRecord, a Attached) error {
	if err := s.state.save(r); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staged[r.VolumeID] = r
	if a != nil {
		s.attached[r.VolumeID] = a
	}
	return nil
}

// forget drops a staged volume from memory and disk, and returns its
// attachment.
func (s *NodeServer) forget(volumeID string) (Attached, error) {
	if err := s.state.remove(volumeID); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.attached[volumeID]
	delete(s.staged, volumeID)
	delete(s.attached, volumeID)
	return a, nil
}

// begin claims the volume for one operation, or fails with ABORTED.
func (s *NodeServer) begin(volumeID string) (func(), error) {
	return s.inflight.begin("volume " + volumeID)
}

// logger returns the structured logger of an operation: the request's
// (with its id and volume, see NewNodeGRPCServer) and the node.
func (s *NodeServer) logger(ctx context.Context, op string) klog.Logger {
	return klog.FromContext(ctx).WithValues("op", op, "node", s.cfg.NodeID)
}
