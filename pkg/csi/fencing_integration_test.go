package csi

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// fenceBlock is the size and alignment of the direct writes below.
const fenceBlock = 4096

// blockPod is a raw block volume staged and published on one node, the
// way the kubelet would do it.
type blockPod struct {
	node           *localcluster.Node
	volumeID       string
	staging        string
	target         string
	publishContext map[string]string
}

func (p *blockPod) client() csipb.NodeClient { return csipb.NewNodeClient(p.node.CSIConn) }

func fenceCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// publish runs ControllerPublishVolume, NodeStageVolume and
// NodePublishVolume for the node.
func (p *blockPod) publish(t *testing.T, ctrl csipb.ControllerClient, dir string) {
	t.Helper()
	ctx := fenceCtx(t)
	resp, err := ctrl.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
		VolumeId: p.volumeID, NodeId: p.node.ID, VolumeCapability: ctrlBlockCap(ctrlSNW),
	})
	if err != nil {
		t.Fatalf("ControllerPublishVolume on %s: %v", p.node.ID, err)
	}
	p.publishContext = resp.GetPublishContext()
	p.staging = filepath.Join(dir, "kubelet", p.node.ID, "staging")
	p.target = filepath.Join(dir, "kubelet", p.node.ID, "pod", "dev")
	for _, d := range []string{p.staging, filepath.Dir(p.target)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	_, err = p.client().NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId: p.volumeID, PublishContext: p.publishContext,
		StagingTargetPath: p.staging, VolumeCapability: ctrlBlockCap(ctrlSNW),
	})
	if err != nil {
		t.Fatalf("NodeStageVolume on %s: %v", p.node.ID, err)
	}
	_, err = p.client().NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId: p.volumeID, PublishContext: p.publishContext, StagingTargetPath: p.staging,
		TargetPath: p.target, VolumeCapability: ctrlBlockCap(ctrlSNW),
	})
	if err != nil {
		t.Fatalf("NodePublishVolume on %s: %v", p.node.ID, err)
	}
}

// unstage runs NodeUnpublishVolume and NodeUnstageVolume.
func (p *blockPod) unstage(t *testing.T) {
	t.Helper()
	ctx := fenceCtx(t)
	if _, err := p.client().NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{
		VolumeId: p.volumeID, TargetPath: p.target}); err != nil {
		t.Errorf("NodeUnpublishVolume on %s: %v", p.node.ID, err)
	}
	if _, err := p.client().NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{
		VolumeId: p.volumeID, StagingTargetPath: p.staging}); err != nil {
		t.Errorf("NodeUnstageVolume on %s: %v", p.node.ID, err)
	}
}

// directIO writes (or reads, with write false) one block at off of the
// published device, bypassing the page cache.
func (p *blockPod) directIO(write bool, pattern byte, off int64) ([]byte, error) {
	buf, err := unix.Mmap(-1, 0, fenceBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	fd, err := unix.Open(p.target, unix.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if write {
		copy(buf, bytes.Repeat([]byte{pattern}, fenceBlock))
		_, err = unix.Pwrite(fd, buf, off)
		return nil, err
	}
	_, err = unix.Pread(fd, buf, off)
	return bytes.Clone(buf), err
}

// TestPublishElsewhereFencesTheOldFrontend plays a node that is lost
// while it has the volume staged: the volume is unpublished from it
// without NodeUnstageVolume and published on another node. The lost
// node's frontend, still attached at the old generation, can no longer
// write; the new node writes, and only its writes land.
func TestPublishElsewhereFencesTheOldFrontend(t *testing.T) {
	requireKernel(t)
	dir := t.TempDir()
	bin := buildTrireme(t, dir) // before the clock of fenceCtx starts
	sys, err := localcluster.StartSystem(fenceCtx(t), localcluster.SystemOptions{
		Binary: bin, Dir: filepath.Join(dir, "system"), Nodes: localcluster.ThreeZones})
	if err != nil {
		t.Fatalf("StartSystem: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if err := sys.Stop(); err != nil {
				t.Errorf("stop system: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	ctrl := csipb.NewControllerClient(sys.Controller.Conn)

	req := ctrlCreateRequest("pvc-fence")
	req.CapacityRange.RequiredBytes = 16 << 20
	req.VolumeCapabilities = []*csipb.VolumeCapability{ctrlBlockCap(ctrlSNW)}
	vol, err := ctrl.CreateVolume(fenceCtx(t), req)
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	id := vol.GetVolume().GetVolumeId()

	lost := &blockPod{node: sys.Node("node-b"), volumeID: id}
	lost.publish(t, ctrl, dir)
	if g := lost.publishContext[PublishGeneration]; g != "1" {
		t.Fatalf("first publish context generation %q, want 1", g)
	}
	if _, err := lost.directIO(true, 0xb1, 0); err != nil {
		t.Fatalf("write on node-b at generation 1: %v", err)
	}

	// node-b is lost: the attacher unpublishes it, nobody unstages it.
	if _, err := ctrl.ControllerUnpublishVolume(fenceCtx(t), &csipb.ControllerUnpublishVolumeRequest{
		VolumeId: id, NodeId: "node-b"}); err != nil {
		t.Fatalf("ControllerUnpublishVolume node-b: %v", err)
	}
	next := &blockPod{node: sys.Node("node-c"), volumeID: id}
	next.publish(t, ctrl, dir)
	if g := next.publishContext[PublishGeneration]; g != "2" {
		t.Fatalf("second publish context generation %q, want 2", g)
	}

	if _, err := lost.directIO(true, 0xb2, fenceBlock); !errors.Is(err, unix.EIO) {
		t.Errorf("write on node-b after the publish on node-c = %v, want EIO", err)
	}
	if _, err := next.directIO(true, 0xc1, 2*fenceBlock); err != nil {
		t.Fatalf("write on node-c at generation 2: %v", err)
	}
	want := map[int64]byte{0: 0xb1, fenceBlock: 0, 2 * fenceBlock: 0xc1}
	for off, pattern := range want {
		got, err := next.directIO(false, 0, off)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{pattern}, fenceBlock)) {
			t.Errorf("node-c reads at %d: %v, want every byte %#x", off, err, pattern)
		}
	}

	lost.unstage(t)
	next.unstage(t)
	if _, err := ctrl.ControllerUnpublishVolume(fenceCtx(t), &csipb.ControllerUnpublishVolumeRequest{
		VolumeId: id, NodeId: "node-c"}); err != nil {
		t.Errorf("ControllerUnpublishVolume node-c: %v", err)
	}
	if _, err := ctrl.DeleteVolume(fenceCtx(t), &csipb.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Errorf("DeleteVolume: %v", err)
	}
	stop()
	mounts, loops, err := localcluster.Leftovers(dir)
	if err != nil || len(mounts) != 0 || len(loops) != 0 {
		t.Errorf("left behind: mounts %v, loops %v (%v)", mounts, loops, err)
	}
}
