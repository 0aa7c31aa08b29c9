package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// This file plays the kubelet: it waits for the attach/detach controller
// and csi-attacher to attach a pod's volume to its node, then stages,
// publishes, unpublishes and unstages it through the node agent's CSI
// Node service, with the paths and requests the kubelet uses.

// podVolume is a claim's volume mounted for one pod on one node.
type podVolume struct {
	e              *env
	node           *localcluster.Node
	pv             *corev1.PersistentVolume
	publishContext map[string]string
	staging        string
	target         string
}

// mount waits until the claim's volume is attached to the pod's node, and
// stages and publishes it there. The test's cleanup unpublishes and
// unstages it if the test has not.
func (e *env) mount(pod *corev1.Pod) *podVolume {
	e.t.Helper()
	pv := e.boundPV(pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName)
	v := &podVolume{e: e, node: e.sys.Node(pod.Spec.NodeName), pv: pv}
	kubelet := filepath.Join(e.dir, "kubelet", pod.Spec.NodeName)
	v.staging = filepath.Join(kubelet, "plugins", "kubernetes.io", "csi", pv.Spec.CSI.Driver, pv.Name, "globalmount")
	v.target = filepath.Join(kubelet, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", pv.Name, "mount")
	v.publishContext = e.waitAttached(pv.Name, pod.Spec.NodeName)

	if err := os.MkdirAll(v.staging, 0o750); err != nil {
		e.t.Fatal(err)
	}
	_, err := v.client().NodeStageVolume(e.ctx(), &csipb.NodeStageVolumeRequest{
		VolumeId: v.id(), PublishContext: v.publishContext, StagingTargetPath: v.staging,
		VolumeCapability: v.capability(), VolumeContext: pv.Spec.CSI.VolumeAttributes,
	})
	if err != nil {
		e.t.Fatalf("NodeStageVolume %s on %s: %v", v.id(), v.node.ID, err)
	}
	e.t.Cleanup(v.unmountQuietly)
	if err := os.MkdirAll(filepath.Dir(v.target), 0o750); err != nil {
		e.t.Fatal(err)
	}
	_, err = v.client().NodePublishVolume(e.ctx(), &csipb.NodePublishVolumeRequest{
		VolumeId: v.id(), PublishContext: v.publishContext, StagingTargetPath: v.staging,
		TargetPath: v.target, VolumeCapability: v.capability(), VolumeContext: pv.Spec.CSI.VolumeAttributes,
	})
	if err != nil {
		e.t.Fatalf("NodePublishVolume %s on %s: %v", v.id(), v.node.ID, err)
	}
	return v
}

func (v *podVolume) id() string { return v.pv.Spec.CSI.VolumeHandle }

func (v *podVolume) client() csipb.NodeClient { return csipb.NewNodeClient(v.node.CSIConn) }

// capability is what the kubelet sends for a Filesystem ReadWriteOnce
// claim: the PV's fsType.
func (v *podVolume) capability() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: v.pv.Spec.CSI.FSType}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// unmount unpublishes and unstages the volume.
func (v *podVolume) unmount() {
	v.e.t.Helper()
	if err := v.unpublishAndUnstage(); err != nil {
		v.e.t.Fatal(err)
	}
}

func (v *podVolume) unmountQuietly() {
	if err := v.unpublishAndUnstage(); err != nil {
		v.e.t.Logf("cleanup: %v", err)
	}
}

func (v *podVolume) unpublishAndUnstage() error {
	ctx := context.WithoutCancel(v.e.ctx())
	if _, err := v.client().NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{
		VolumeId: v.id(), TargetPath: v.target}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume %s on %s: %w", v.id(), v.node.ID, err)
	}
	if _, err := v.client().NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{
		VolumeId: v.id(), StagingTargetPath: v.staging}); err != nil {
		return fmt.Errorf("NodeUnstageVolume %s on %s: %w", v.id(), v.node.ID, err)
	}
	return nil
}

// expand is the kubelet's NodeExpandVolume for a mounted volume.
func (v *podVolume) expand(bytes int64) {
	v.e.t.Helper()
	_, err := v.client().NodeExpandVolume(v.e.ctx(), &csipb.NodeExpandVolumeRequest{
		VolumeId: v.id(), VolumePath: v.target, StagingTargetPath: v.staging,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: bytes}, VolumeCapability: v.capability(),
	})
	if err != nil {
		v.e.t.Fatalf("NodeExpandVolume %s to %d on %s: %v", v.id(), bytes, v.node.ID, err)
	}
}

// fsSize returns the size of the filesystem the pod sees.
func (v *podVolume) fsSize() int64 {
	v.e.t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(v.target, &st); err != nil {
		v.e.t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

// writeAndCheck writes n bytes of a pattern to a file in the volume, syncs
// it, and reads it back.
func (v *podVolume) writeAndCheck(name string, n int) {
	v.e.t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + len(name))
	}
	path := filepath.Join(v.target, name)
	f, err := os.Create(path)
	if err != nil {
		v.e.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		v.e.t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		v.e.t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(path)
	if err != nil {
		v.e.t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		v.e.t.Fatalf("%s read back differs from what was written", path)
	}
}

// waitAttached waits until a VolumeAttachment of pv to node is attached,
// and returns its attachment metadata: the publish context.
func (e *env) waitAttached(pv, node string) map[string]string {
	e.t.Helper()
	var meta map[string]string
	e.eventually(time.Minute, "attachment of "+pv+" to "+node, func() (bool, error) {
		list, err := e.kube.StorageV1().VolumeAttachments().List(e.ctx(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, va := range list.Items {
			if ptrString(va.Spec.Source.PersistentVolumeName) == pv && va.Spec.NodeName == node {
				meta = va.Status.AttachmentMetadata
				if va.Status.AttachError != nil {
					return false, fmt.Errorf("attach error: %s", va.Status.AttachError.Message)
				}
				return va.Status.Attached, fmt.Errorf("%s not attached yet", va.Name)
			}
		}
		return false, fmt.Errorf("no VolumeAttachment yet")
	})
	return meta
}

// waitDetached waits until no VolumeAttachment names pv.
func (e *env) waitDetached(pv string) {
	e.t.Helper()
	e.eventually(time.Minute, "detach of "+pv, func() (bool, error) {
		list, err := e.kube.StorageV1().VolumeAttachments().List(e.ctx(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, va := range list.Items {
			if ptrString(va.Spec.Source.PersistentVolumeName) == pv {
				return false, fmt.Errorf("%s still there (attached %v)", va.Name, va.Status.Attached)
			}
		}
		return true, nil
	})
}
