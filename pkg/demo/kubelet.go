package demo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// This file plays the parts of Kubernetes: the external-provisioner
// (CreateVolume, DeleteVolume), the external-attacher (ControllerPublish
// and Unpublish) and the kubelet (NodeStage, NodePublish and their
// reverses), each calling the driver's CSI services over their unix
// sockets exactly as those components do.

// mountCapability is what a PersistentVolumeClaim with volumeMode
// Filesystem and accessModes [ReadWriteOnce] asks for.
func mountCapability(fsType string) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// zoneSegments are accessibility segments naming zones, the preferred
// zone first, as the external-provisioner builds them.
func zoneSegments(preferred string, zones []string) []*csipb.Topology {
	out := []*csipb.Topology{zoneSegment(preferred)}
	for _, z := range zones {
		if z != preferred {
			out = append(out, zoneSegment(z))
		}
	}
	return out
}

// zoneSegment carries both keys the nodes report their zone under, as
// the provisioner copies every topology key the driver registers.
func zoneSegment(zone string) *csipb.Topology {
	return &csipb.Topology{Segments: map[string]string{api.ZoneTopologyKey: zone, csi.DriverZoneKey: zone}}
}

// provision is CreateVolume for a PVC of the given size, preferring zone.
func (r *run) provision(ctx context.Context, size int64, preferred string) (*csipb.Volume, error) {
	zones := r.sys.Zones()
	req := &csipb.CreateVolumeRequest{
		Name:               r.pvName,
		CapacityRange:      &csipb.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csipb.VolumeCapability{mountCapability("")},
		Parameters:         map[string]string{csi.ParamReplicas: "3", csi.ParamFSType: r.o.FSType},
		AccessibilityRequirements: &csipb.TopologyRequirement{
			Requisite: zoneSegments(preferred, zones),
			Preferred: zoneSegments(preferred, zones),
		},
	}
	resp, err := r.controller().CreateVolume(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create volume %s: %w", r.pvName, err)
	}
	return resp.GetVolume(), nil
}

// retryAttempts and retryBackoff bound how the demo retries a CSI call
// that failed for a passing reason, as the sidecars do with a longer
// exponential backoff.
const (
	retryAttempts = 5
	retryBackoff  = 200 * time.Millisecond
)

// retry calls fn until it succeeds, fails with a code that says retrying
// cannot help, or has failed retryAttempts times, waiting backoff after
// the first failure and twice as long after each next one; it tells
// retried about each failure it retries after.
func retry(ctx context.Context, backoff time.Duration, fn func() error, retried func(error)) error {
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || attempt == retryAttempts || !transient(err) {
			return err
		}
		retried(err)
		if err := sleepCtx(ctx, backoff); err != nil {
			return err
		}
		backoff *= 2
	}
}

// transient says whether a CSI call that failed with err may succeed when
// made again: the external-provisioner retries these.
func transient(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded:
		return true
	}
	return false
}

// deprovision is DeleteVolume.
func (r *run) deprovision(ctx context.Context, volumeID string) error {
	_, err := r.controller().DeleteVolume(ctx, &csipb.DeleteVolumeRequest{VolumeId: volumeID})
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", volumeID, err)
	}
	return nil
}

func (r *run) controller() csipb.ControllerClient {
	return csipb.NewControllerClient(r.sys.Controller.Conn)
}

// podMount is the volume as one node's kubelet presents it to a pod.
type podMount struct {
	node           *localcluster.Node
	staging        string // the global mount, one per node
	target         string // the pod's volume directory
	publishContext map[string]string
	device         string // the block device staged, for the narration
	undo           []undoCall
}

// undoCall is the reverse of one CSI call that made the mount.
type undoCall struct {
	call string // the CSI call that undoes
	undo *undo
}

// newPodMount lays out a node's staging and target paths the way the
// kubelet does, below the work directory.
func (r *run) newPodMount(n *localcluster.Node) *podMount {
	kubelet := filepath.Join(r.o.Dir, "kubelet", n.ID)
	return &podMount{
		node:    n,
		staging: filepath.Join(kubelet, "plugins", csi.DriverName, r.pvName, "globalmount"),
		target:  filepath.Join(kubelet, "pods", "demo-pod", "volumes", r.pvName, "mount"),
	}
}

func (m *podMount) nodeClient() csipb.NodeClient { return csipb.NewNodeClient(m.node.CSIConn) }

// controllerPublish is the external-attacher's ControllerPublishVolume.
func (r *run) controllerPublish(ctx context.Context, m *podMount) error {
	resp, err := r.controller().ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
		VolumeId: r.vol.GetVolumeId(), NodeId: m.node.ID,
		VolumeCapability: mountCapability(""), VolumeContext: r.vol.GetVolumeContext(),
	})
	if err != nil {
		return fmt.Errorf("publish %s to %s: %w", r.vol.GetVolumeId(), m.node.ID, err)
	}
	m.publishContext = resp.GetPublishContext()
	return nil
}

func (r *run) controllerUnpublish(ctx context.Context, m *podMount) error {
	_, err := r.controller().ControllerUnpublishVolume(ctx, &csipb.ControllerUnpublishVolumeRequest{
		VolumeId: r.vol.GetVolumeId(), NodeId: m.node.ID,
	})
	if err != nil {
		return fmt.Errorf("unpublish %s from %s: %w", r.vol.GetVolumeId(), m.node.ID, err)
	}
	return nil
}

// stage is the kubelet's NodeStageVolume; the kubelet creates the staging
// directory first.
func (r *run) stage(ctx context.Context, m *podMount) error {
	if err := os.MkdirAll(m.staging, 0o750); err != nil {
		return err
	}
	_, err := m.nodeClient().NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId: r.vol.GetVolumeId(), PublishContext: m.publishContext,
		StagingTargetPath: m.staging, VolumeCapability: mountCapability(""),
		VolumeContext: r.vol.GetVolumeContext(),
	})
	if err != nil {
		return fmt.Errorf("stage %s on %s: %w", r.vol.GetVolumeId(), m.node.ID, err)
	}
	m.device = mountSource(m.staging)
	return nil
}

func (r *run) unstage(ctx context.Context, m *podMount) error {
	_, err := m.nodeClient().NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{
		VolumeId: r.vol.GetVolumeId(), StagingTargetPath: m.staging,
	})
	if err != nil {
		return fmt.Errorf("unstage %s on %s: %w", r.vol.GetVolumeId(), m.node.ID, err)
	}
	return nil
}

// publish is the kubelet's NodePublishVolume; the kubelet creates the
// target's parent directory.
func (r *run) publish(ctx context.Context, m *podMount) error {
	if err := os.MkdirAll(filepath.Dir(m.target), 0o750); err != nil {
		return err
	}
	_, err := m.nodeClient().NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId: r.vol.GetVolumeId(), PublishContext: m.publishContext,
		StagingTargetPath: m.staging, TargetPath: m.target,
		VolumeCapability: mountCapability(""), VolumeContext: r.vol.GetVolumeContext(),
	})
	if err != nil {
		return fmt.Errorf("publish %s on %s: %w", r.vol.GetVolumeId(), m.node.ID, err)
	}
	return nil
}

func (r *run) unpublish(ctx context.Context, m *podMount) error {
	_, err := m.nodeClient().NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{
		VolumeId: r.vol.GetVolumeId(), TargetPath: m.target,
	})
	if err != nil {
		return fmt.Errorf("unpublish %s on %s: %w", r.vol.GetVolumeId(), m.node.ID, err)
	}
	return nil
}

// mountSource returns the device mounted at path according to
// /proc/mounts, or "" when it cannot tell.
func mountSource(path string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return ""
	}
	dev := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == path {
			dev = f[0]
		}
	}
	return dev
}
