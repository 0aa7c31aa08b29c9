package csi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/mount-utils"

	"github.com/trireme-csi/trireme/pkg/frontend"
)

const (
	volA    = "vol-0000000000000000000000000000000a"
	volB    = "vol-0000000000000000000000000000000b"
	volGone = "vol-00000000000000000000000000000000"
)

// fakeLocator knows volA and volB; every other id is not found.
type fakeLocator struct {
	mu          sync.Mutex
	unavailable bool
	degraded    bool
	publishedTo string
	generation  uint64
}

func (l *fakeLocator) PrimaryAddress(_ context.Context, id string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.unavailable:
		return "", fmt.Errorf("locate %s: %w", id, ErrLocatorUnavailable)
	case id != volA && id != volB:
		return "", fmt.Errorf("locate %s: %w", id, ErrVolumeNotFound)
	}
	return "127.0.0.1:1", nil
}

func (l *fakeLocator) PublishedNode(ctx context.Context, id string) (string, uint64, error) {
	if _, err := l.PrimaryAddress(ctx, id); err != nil {
		return "", 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.publishedTo, l.generation, nil
}

func (l *fakeLocator) Health(ctx context.Context, id string) (VolumeHealth, error) {
	if _, err := l.PrimaryAddress(ctx, id); err != nil {
		return VolumeHealth{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.degraded {
		return VolumeHealth{Degraded: true, Message: "1 of 3 replicas in sync"}, nil
	}
	return VolumeHealth{Message: "3 of 3 replicas in sync"}, nil
}

// fakeAttached stands for a loop device; /dev/null is a device node
// that exists everywhere.
type fakeAttached struct {
	detached *int
	dev      *fakeDevice // nil: Resize fails
}

func (a fakeAttached) Device() string                   { return "/dev/null" }
func (a fakeAttached) Detach(ctx context.Context) error { *a.detached++; return nil }

func (a fakeAttached) Resize(ctx context.Context) (int64, error) {
	if a.dev == nil {
		return 0, errors.New("fake device cannot resize")
	}
	a.dev.resizes++
	return a.dev.size, a.dev.err
}

// fakeDevice is the size an attached volume grows to on Resize.
type fakeDevice struct {
	size    int64
	err     error
	resizes int
}

// fakeResizer records the filesystems it was asked to grow.
type fakeResizer struct {
	calls []string // device + " " + mount path
	err   error
}

func (r *fakeResizer) Resize(device, mountPath string) (bool, error) {
	r.calls = append(r.calls, device+" "+mountPath)
	return r.err == nil, r.err
}

// fakeMounter formats nothing and mounts in memory.
type fakeMounter struct{ *mount.FakeMounter }

func (m fakeMounter) FormatAndMount(source, target, fstype string, options []string) error {
	return m.Mount(source, target, fstype, options)
}

// nodeEnv is a NodeServer over fakes, with paths in a temp directory.
type nodeEnv struct {
	s        *NodeServer
	loc      *fakeLocator
	mounter  fakeMounter
	dir      string
	detached int
	dev      fakeDevice
	resizer  fakeResizer
}

func newNodeEnv(t *testing.T) *nodeEnv {
	t.Helper()
	e := &nodeEnv{loc: &fakeLocator{publishedTo: "node-a"}, dir: t.TempDir(),
		mounter: fakeMounter{mount.NewFakeMounter(nil)}}
	e.s = e.newServer(t)
	return e
}

// newServer returns a NodeServer over the environment, as a restarted
// agent would have.
func (e *nodeEnv) newServer(t *testing.T) *NodeServer {
	t.Helper()
	s, err := NewNodeServer(NodeConfig{
		NodeID: "node-a", Topology: map[string]string{"topology.kubernetes.io/zone": "zone-a", DriverZoneKey: "zone-a"},
		MaxVolumes: 8, StateDir: filepath.Join(e.dir, "state"), MountDir: filepath.Join(e.dir, "attach"),
		Locator: e.loc, Mounter: e.mounter, Resizer: &e.resizer,
		Attach: func(context.Context, frontend.AttachOptions) (Attached, error) {
			return fakeAttached{detached: &e.detached, dev: &e.dev}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *nodeEnv) path(name string) string { return filepath.Join(e.dir, name) }

func mountCap(fs string, mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCap() *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

var writer = mountCap("ext4", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)

func (e *nodeEnv) stageReq(id string) *csipb.NodeStageVolumeRequest {
	return &csipb.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: e.path("staging"), VolumeCapability: writer}
}

func (e *nodeEnv) publishReq(id string) *csipb.NodePublishVolumeRequest {
	return &csipb.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: e.path("staging"),
		TargetPath: e.path("target"), VolumeCapability: writer}
}

func (e *nodeEnv) stage(t *testing.T, req *csipb.NodeStageVolumeRequest) {
	t.Helper()
	if _, err := e.s.NodeStageVolume(context.Background(), req); err != nil {
		t.Fatalf("NodeStageVolume: %v", err)
	}
}

func (e *nodeEnv) publish(t *testing.T, req *csipb.NodePublishVolumeRequest) {
	t.Helper()
	if _, err := e.s.NodePublishVolume(context.Background(), req); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("code %v (%v), want %v", got, err, want)
	}
}

func TestNodeStageVolumeCodes(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *nodeEnv)
		edit  func(e *nodeEnv, r *csipb.NodeStageVolumeRequest)
		want  codes.Code
	}{
		{"ok", nil, func(*nodeEnv, *csipb.NodeStageVolumeRequest) {}, codes.OK},
		{"no volume id", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.VolumeId = "" }, codes.InvalidArgument},
		{"no staging path", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.StagingTargetPath = "" }, codes.InvalidArgument},
		{"relative staging path", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.StagingTargetPath = "staging" }, codes.InvalidArgument},
		{"staging path with ..", nil, func(e *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.StagingTargetPath = e.dir + "/x/../staging"
		}, codes.InvalidArgument},
		{"no capability", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.VolumeCapability = nil }, codes.InvalidArgument},
		{"no access mode", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.VolumeCapability = &csipb.VolumeCapability{AccessType: writer.AccessType}
		}, codes.InvalidArgument},
		{"multi-node mode", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.VolumeCapability = mountCap("ext4", csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
		}, codes.InvalidArgument},
		{"unsupported fs type", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.VolumeCapability = mountCap("btrfs", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
		}, codes.InvalidArgument},
		{"unsupported fs type in context", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.VolumeCapability = mountCap("", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
			r.VolumeContext = map[string]string{ContextFSType: "vfat"}
		}, codes.InvalidArgument},
		{"generation not a number", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.PublishContext = map[string]string{PublishGeneration: "one"}
		}, codes.InvalidArgument},
		{"generation zero", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.PublishContext = map[string]string{PublishGeneration: "0"}
		}, codes.InvalidArgument},
		{"ill-formed volume id", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.VolumeId = "no/such" }, codes.NotFound},
		{"unknown volume", nil, func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.VolumeId = volGone }, codes.NotFound},
		{"controller unreachable", func(e *nodeEnv) { e.loc.unavailable = true },
			func(*nodeEnv, *csipb.NodeStageVolumeRequest) {}, codes.Unavailable},
		{"published to another node", func(e *nodeEnv) { e.loc.publishedTo = "node-b" },
			func(*nodeEnv, *csipb.NodeStageVolumeRequest) {}, codes.FailedPrecondition},
		{"published nowhere", func(e *nodeEnv) { e.loc.publishedTo = "" },
			func(*nodeEnv, *csipb.NodeStageVolumeRequest) {}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			req := e.stageReq(volA)
			tt.edit(e, req)
			_, err := e.s.NodeStageVolume(context.Background(), req)
			wantCode(t, err, tt.want)
		})
	}
}

func TestNodeStageVolumeAgain(t *testing.T) {
	tests := []struct {
		name string
		edit func(e *nodeEnv, r *csipb.NodeStageVolumeRequest)
		want codes.Code
	}{
		{"same request", func(*nodeEnv, *csipb.NodeStageVolumeRequest) {}, codes.OK},
		{"other staging path", func(e *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.StagingTargetPath = e.path("other") }, codes.AlreadyExists},
		{"other filesystem", func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) {
			r.VolumeCapability = mountCap("xfs", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
		}, codes.AlreadyExists},
		{"block instead of mount", func(_ *nodeEnv, r *csipb.NodeStageVolumeRequest) { r.VolumeCapability = blockCap() }, codes.AlreadyExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, e.stageReq(volA))
			req := e.stageReq(volA)
			tt.edit(e, req)
			_, err := e.s.NodeStageVolume(context.Background(), req)
			wantCode(t, err, tt.want)
		})
	}
}

func TestNodeStageVolumeStagingGone(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	if err := e.mounter.Unmount(e.path("staging")); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.NodeStageVolume(context.Background(), e.stageReq(volA))
	wantCode(t, err, codes.FailedPrecondition)
}

func TestNodeStageVolumeRecordsState(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	records, err := e.s.state.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(records) != 1 || records[0].VolumeID != volA || records[0].StagingPath != e.path("staging") ||
		records[0].Device != "/dev/null" || records[0].FSType != "ext4" || records[0].Block {
		t.Errorf("state %+v", records)
	}
}

func TestNodePublishVolumeCodes(t *testing.T) {
	tests := []struct {
		name  string
		stage bool
		edit  func(e *nodeEnv, r *csipb.NodePublishVolumeRequest)
		want  codes.Code
	}{
		{"ok", true, func(*nodeEnv, *csipb.NodePublishVolumeRequest) {}, codes.OK},
		{"no volume id", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.VolumeId = "" }, codes.InvalidArgument},
		{"no target path", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.TargetPath = "" }, codes.InvalidArgument},
		{"relative target path", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.TargetPath = "target" }, codes.InvalidArgument},
		{"target path with ..", true, func(e *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.TargetPath = e.dir + "/../target" }, codes.InvalidArgument},
		{"no staging path", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.StagingTargetPath = "" }, codes.InvalidArgument},
		{"relative staging path", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.StagingTargetPath = "a/b" }, codes.InvalidArgument},
		{"no capability", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.VolumeCapability = nil }, codes.InvalidArgument},
		{"multi-node mode", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCap("", csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY)
		}, codes.InvalidArgument},
		{"unsupported fs type", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) {
			r.VolumeCapability = mountCap("ntfs", csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
		}, codes.InvalidArgument},
		{"unknown volume", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.VolumeId = volGone }, codes.NotFound},
		{"ill-formed volume id", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.VolumeId = "x" }, codes.NotFound},
		{"not staged", false, func(*nodeEnv, *csipb.NodePublishVolumeRequest) {}, codes.FailedPrecondition},
		{"other staging path", true, func(e *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.StagingTargetPath = e.path("other") }, codes.FailedPrecondition},
		{"block on a mount volume", true, func(_ *nodeEnv, r *csipb.NodePublishVolumeRequest) { r.VolumeCapability = blockCap() }, codes.FailedPrecondition},
		{"target inside the staging path", true, func(e *nodeEnv, r *csipb.NodePublishVolumeRequest) {
			r.TargetPath = filepath.Join(e.path("staging"), "inner")
		}, codes.InvalidArgument},
		{"target is a symbolic link", true, func(e *nodeEnv, r *csipb.NodePublishVolumeRequest) {
			link := e.path("link")
			if err := os.Symlink(e.dir, link); err != nil {
				panic(err)
			}
			r.TargetPath = link
		}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			if tt.stage {
				e.stage(t, e.stageReq(volA))
			}
			req := e.publishReq(volA)
			tt.edit(e, req)
			_, err := e.s.NodePublishVolume(context.Background(), req)
			wantCode(t, err, tt.want)
		})
	}
}

// TestNodePublishVolumeNeverEmpty checks that a staging path that lost
// its mount is not published: the pod would get an empty directory.
func TestNodePublishVolumeNeverEmpty(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	if err := e.mounter.Unmount(e.path("staging")); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.NodePublishVolume(context.Background(), e.publishReq(volA))
	wantCode(t, err, codes.FailedPrecondition)
	if _, err := os.Stat(e.path("target")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target created: %v", err)
	}
}

func TestNodePublishVolumeAgain(t *testing.T) {
	tests := []struct {
		name string
		edit func(r *csipb.NodePublishVolumeRequest)
		want codes.Code
	}{
		{"same request", func(*csipb.NodePublishVolumeRequest) {}, codes.OK},
		{"read-only now", func(r *csipb.NodePublishVolumeRequest) { r.Readonly = true }, codes.AlreadyExists},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, e.stageReq(volA))
			e.publish(t, e.publishReq(volA))
			req := e.publishReq(volA)
			tt.edit(req)
			_, err := e.s.NodePublishVolume(context.Background(), req)
			wantCode(t, err, tt.want)
		})
	}
}

func TestNodePublishVolumeMounts(t *testing.T) {
	tests := []struct {
		name     string
		block    bool
		readOnly bool
		source   string
		opts     []string
	}{
		// FakeMounter records a bind mount of a mount point with the
		// device mounted there, as /proc/mounts does.
		{"filesystem", false, false, "/dev/null", []string{"bind"}},
		{"read-only filesystem", false, true, "/dev/null", []string{"bind", "ro"}},
		{"block", true, false, "/dev/null", []string{"bind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			sreq, preq := e.stageReq(volA), e.publishReq(volA)
			if tt.block {
				sreq.VolumeCapability, preq.VolumeCapability = blockCap(), blockCap()
			}
			preq.Readonly = tt.readOnly
			e.stage(t, sreq)
			e.publish(t, preq)
			source := tt.source
			mp := e.mounter.MountPoints[len(e.mounter.MountPoints)-1]
			if mp.Path != e.path("target") || mp.Device != source || !slices.Equal(mp.Opts, tt.opts) {
				t.Errorf("mount %+v, want %s on %s with %v", mp, source, e.path("target"), tt.opts)
			}
			fi, err := os.Stat(e.path("target"))
			if err != nil || fi.IsDir() == tt.block {
				t.Errorf("target %v, %v: want a directory for filesystems, a file for block", fi, err)
			}
		})
	}
}

func TestNodeUnpublishVolume(t *testing.T) {
	tests := []struct {
		name    string
		publish bool
		edit    func(e *nodeEnv, r *csipb.NodeUnpublishVolumeRequest)
		want    codes.Code
	}{
		{"published", true, func(*nodeEnv, *csipb.NodeUnpublishVolumeRequest) {}, codes.OK},
		{"already unpublished", false, func(*nodeEnv, *csipb.NodeUnpublishVolumeRequest) {}, codes.OK},
		{"unknown volume, no target", false, func(_ *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.VolumeId = volGone }, codes.OK},
		{"no volume id", true, func(_ *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.VolumeId = "" }, codes.InvalidArgument},
		{"no target path", true, func(_ *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.TargetPath = "" }, codes.InvalidArgument},
		{"relative target path", true, func(_ *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.TargetPath = "t" }, codes.InvalidArgument},
		{"target path with ..", true, func(e *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.TargetPath = e.dir + "/../t" }, codes.InvalidArgument},
		{"someone else's mount", true, func(_ *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.VolumeId = volB }, codes.NotFound},
		{"the staging path", true, func(e *nodeEnv, r *csipb.NodeUnpublishVolumeRequest) { r.TargetPath = e.path("staging") }, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, e.stageReq(volA))
			if tt.publish {
				e.publish(t, e.publishReq(volA))
			}
			req := &csipb.NodeUnpublishVolumeRequest{VolumeId: volA, TargetPath: e.path("target")}
			tt.edit(e, req)
			_, err := e.s.NodeUnpublishVolume(context.Background(), req)
			wantCode(t, err, tt.want)
			if _, serr := os.Stat(e.path("target")); tt.want == codes.OK && !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("target not removed: %v", serr)
			}
		})
	}
}

// A target directory the kubelet left files in is not the driver's to
// empty: unpublish unmounts, leaves the directory, and succeeds, so the
// pod does not stay terminating on a repeated INTERNAL.
func TestNodeUnpublishLeavesANonEmptyTarget(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	e.publish(t, e.publishReq(volA))
	kept := filepath.Join(e.path("target"), "kept")
	if err := os.WriteFile(kept, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	req := &csipb.NodeUnpublishVolumeRequest{VolumeId: volA, TargetPath: e.path("target")}
	for range 2 {
		if _, err := e.s.NodeUnpublishVolume(context.Background(), req); err != nil {
			t.Fatalf("NodeUnpublishVolume: %v", err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("file in the target: %v", err)
	}
}

func TestNodeUnstageVolume(t *testing.T) {
	tests := []struct {
		name      string
		publish   bool
		edit      func(e *nodeEnv, r *csipb.NodeUnstageVolumeRequest)
		want      codes.Code
		detaching int
	}{
		{"staged", false, func(*nodeEnv, *csipb.NodeUnstageVolumeRequest) {}, codes.OK, 1},
		{"unknown volume", false, func(_ *nodeEnv, r *csipb.NodeUnstageVolumeRequest) { r.VolumeId = volGone }, codes.OK, 0},
		{"still published", true, func(*nodeEnv, *csipb.NodeUnstageVolumeRequest) {}, codes.FailedPrecondition, 0},
		{"no volume id", false, func(_ *nodeEnv, r *csipb.NodeUnstageVolumeRequest) { r.VolumeId = "" }, codes.InvalidArgument, 0},
		{"no staging path", false, func(_ *nodeEnv, r *csipb.NodeUnstageVolumeRequest) { r.StagingTargetPath = "" }, codes.InvalidArgument, 0},
		{"relative staging path", false, func(_ *nodeEnv, r *csipb.NodeUnstageVolumeRequest) { r.StagingTargetPath = "s" }, codes.InvalidArgument, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.stage(t, e.stageReq(volA))
			if tt.publish {
				e.publish(t, e.publishReq(volA))
			}
			req := &csipb.NodeUnstageVolumeRequest{VolumeId: volA, StagingTargetPath: e.path("staging")}
			tt.edit(e, req)
			_, err := e.s.NodeUnstageVolume(context.Background(), req)
			wantCode(t, err, tt.want)
			if e.detached != tt.detaching {
				t.Errorf("%d detaches, want %d", e.detached, tt.detaching)
			}
		})
	}
}

func TestNodeUnstageVolumeRemovesWhatItCreated(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	req := &csipb.NodeUnstageVolumeRequest{VolumeId: volA, StagingTargetPath: e.path("staging")}
	for range 2 {
		if _, err := e.s.NodeUnstageVolume(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(e.path("staging")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging directory it created is left: %v", err)
	}
	if records, _ := e.s.state.load(); len(records) != 0 {
		t.Errorf("state left: %+v", records)
	}
	if len(e.mounter.MountPoints) != 0 {
		t.Errorf("mounts left: %+v", e.mounter.MountPoints)
	}
}

func TestNodeGetVolumeStats(t *testing.T) {
	tests := []struct {
		name     string
		degraded bool
		edit     func(e *nodeEnv, r *csipb.NodeGetVolumeStatsRequest)
		want     codes.Code
	}{
		{"healthy", false, func(*nodeEnv, *csipb.NodeGetVolumeStatsRequest) {}, codes.OK},
		{"degraded", true, func(*nodeEnv, *csipb.NodeGetVolumeStatsRequest) {}, codes.OK},
		{"staging path", false, func(e *nodeEnv, r *csipb.NodeGetVolumeStatsRequest) { r.VolumePath = e.path("staging") }, codes.OK},
		{"no volume id", false, func(_ *nodeEnv, r *csipb.NodeGetVolumeStatsRequest) { r.VolumeId = "" }, codes.InvalidArgument},
		{"no volume path", false, func(_ *nodeEnv, r *csipb.NodeGetVolumeStatsRequest) { r.VolumePath = "" }, codes.InvalidArgument},
		{"unknown volume", false, func(_ *nodeEnv, r *csipb.NodeGetVolumeStatsRequest) { r.VolumeId = volGone }, codes.NotFound},
		{"relative path", false, func(_ *nodeEnv, r *csipb.NodeGetVolumeStatsRequest) { r.VolumePath = "some/path" }, codes.NotFound},
		{"other path", false, func(e *nodeEnv, r *csipb.NodeGetVolumeStatsRequest) { r.VolumePath = e.dir }, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.loc.degraded = tt.degraded
			e.stage(t, e.stageReq(volA))
			e.publish(t, e.publishReq(volA))
			req := &csipb.NodeGetVolumeStatsRequest{VolumeId: volA, VolumePath: e.path("target")}
			tt.edit(e, req)
			resp, err := e.s.NodeGetVolumeStats(context.Background(), req)
			wantCode(t, err, tt.want)
			if err != nil {
				return
			}
			if len(resp.GetUsage()) != 2 || resp.GetUsage()[0].GetTotal() <= 0 || resp.GetUsage()[1].GetUnit() != csipb.VolumeUsage_INODES {
				t.Errorf("usage %v", resp.GetUsage())
			}
			if c := resp.GetVolumeCondition(); c.GetAbnormal() != tt.degraded || c.GetMessage() == "" {
				t.Errorf("condition %v, want abnormal=%v with a message", c, tt.degraded)
			}
		})
	}
}

func TestNodeConcurrentOperationAborted(t *testing.T) {
	e := newNodeEnv(t)
	release, err := e.s.begin(volA)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	ctx := context.Background()
	_, err = e.s.NodeStageVolume(ctx, e.stageReq(volA))
	wantCode(t, err, codes.Aborted)
	_, err = e.s.NodePublishVolume(ctx, e.publishReq(volA))
	wantCode(t, err, codes.Aborted)
	_, err = e.s.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: volA, TargetPath: e.path("t")})
	wantCode(t, err, codes.Aborted)
	_, err = e.s.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: volA, StagingTargetPath: e.path("s")})
	wantCode(t, err, codes.Aborted)
	_, err = e.s.NodeStageVolume(ctx, e.stageReq(volB))
	wantCode(t, err, codes.OK)
}

func TestNodeGetInfo(t *testing.T) {
	e := newNodeEnv(t)
	resp, err := e.s.NodeGetInfo(context.Background(), &csipb.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	seg := resp.GetAccessibleTopology().GetSegments()
	if resp.GetNodeId() != "node-a" || resp.GetMaxVolumesPerNode() != 8 ||
		seg["topology.kubernetes.io/zone"] != "zone-a" || seg[DriverZoneKey] != "zone-a" || len(seg) != 2 {
		t.Errorf("NodeGetInfo %v", resp)
	}
}

func TestNodeGetCapabilities(t *testing.T) {
	e := newNodeEnv(t)
	resp, err := e.s.NodeGetCapabilities(context.Background(), &csipb.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []csipb.NodeServiceCapability_RPC_Type
	for _, c := range resp.GetCapabilities() {
		got = append(got, c.GetRpc().GetType())
	}
	want := []csipb.NodeServiceCapability_RPC_Type{
		csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csipb.NodeServiceCapability_RPC_VOLUME_CONDITION,
		csipb.NodeServiceCapability_RPC_EXPAND_VOLUME,
	}
	if !slices.Equal(got, want) {
		t.Errorf("capabilities %v, want %v", got, want)
	}
}

// TestNodeReaderOnly checks that a SINGLE_NODE_READER_ONLY volume is
// attached, mounted and published read-only, even when the publish
// request does not ask for it.
func TestNodeReaderOnly(t *testing.T) {
	e := newNodeEnv(t)
	var attachedRO bool
	e.s.cfg.Attach = func(_ context.Context, o frontend.AttachOptions) (Attached, error) {
		attachedRO = o.ReadOnly
		return fakeAttached{detached: &e.detached}, nil
	}
	reader := mountCap("ext4", csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)
	sreq, preq := e.stageReq(volA), e.publishReq(volA)
	sreq.VolumeCapability, preq.VolumeCapability = reader, reader
	e.stage(t, sreq)
	e.publish(t, preq)
	mps := e.mounter.MountPoints
	if !attachedRO || len(mps) != 2 || !slices.Equal(mps[0].Opts, []string{"ro"}) || !slices.Equal(mps[1].Opts, []string{"bind", "ro"}) {
		t.Errorf("attached read-only %v, mounts %+v", attachedRO, mps)
	}
	_, err := e.s.NodeStageVolume(context.Background(), e.stageReq(volA))
	wantCode(t, err, codes.AlreadyExists)
}

func TestNodeStageVolumeLimit(t *testing.T) {
	e := newNodeEnv(t)
	e.s.cfg.MaxVolumes = 1
	e.stage(t, e.stageReq(volA))
	req := e.stageReq(volB)
	req.StagingTargetPath = e.path("staging-b")
	_, err := e.s.NodeStageVolume(context.Background(), req)
	wantCode(t, err, codes.ResourceExhausted)
}

// TestNodeRestoreWithoutController restarts the Node service while the
// controller cannot be reached: the volume cannot be attached again, so
// publishing it fails until a NodeStageVolume retry attaches it.
func TestNodeRestoreWithoutController(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	e.publish(t, e.publishReq(volA))

	e.s = e.newServer(t)
	e.loc.unavailable = true
	if err := e.s.Restore(context.Background()); !errors.Is(err, ErrLocatorUnavailable) {
		t.Fatalf("Restore: %v, want ErrLocatorUnavailable", err)
	}
	_, err := e.s.NodePublishVolume(context.Background(), e.publishReq(volA))
	wantCode(t, err, codes.FailedPrecondition)

	e.loc.unavailable = false
	e.stage(t, e.stageReq(volA))
	e.publish(t, e.publishReq(volA))
}

// TestNodeRestoreForgetsGoneVolumes restarts the Node service after the
// volume was published to another node: it is not attached again.
func TestNodeRestoreForgetsGoneVolumes(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	e.s = e.newServer(t)
	e.loc.publishedTo = "node-b"
	if err := e.s.Restore(context.Background()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if records, _ := e.s.state.load(); len(records) != 0 || e.s.record(volA) != nil {
		t.Errorf("volume published elsewhere still recorded: %+v", records)
	}
	_, err := e.s.NodeUnstageVolume(context.Background(), &csipb.NodeUnstageVolumeRequest{VolumeId: volA, StagingTargetPath: e.path("staging")})
	wantCode(t, err, codes.OK)
}

// TestNodeKeepReattaching recovers a staged volume while the controller
// cannot be reached, and checks that it is attached again once it can.
func TestNodeKeepReattaching(t *testing.T) {
	e := newNodeEnv(t)
	e.stage(t, e.stageReq(volA))
	e.s = e.newServer(t)
	e.loc.mu.Lock()
	e.loc.unavailable = true
	e.loc.mu.Unlock()
	if err := e.s.Recover(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.s.KeepReattaching(ctx, 10*time.Millisecond)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(50 * time.Millisecond)
	if e.s.attachment(volA) != nil {
		t.Fatal("attached while the controller is unreachable")
	}
	e.loc.mu.Lock()
	e.loc.unavailable = false
	e.loc.mu.Unlock()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("KeepReattaching did not finish")
	}
	if e.s.attachment(volA) == nil {
		t.Error("volume not attached again")
	}
}

// TestNodeAttachesAtTheControllersGeneration checks that the frontend
// presents the attachment generation the controller recorded, whatever
// the publish context says (missing or forged), at stage and again when
// a restarted Node service restores the volume.
func TestNodeAttachesAtTheControllersGeneration(t *testing.T) {
	for _, tc := range []struct {
		name    string
		context map[string]string
	}{
		{"publish context agrees", map[string]string{PublishGeneration: "7"}},
		{"no publish context", nil},
		{"forged generation", map[string]string{PublishGeneration: "999"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newNodeEnv(t)
			e.loc.generation = 7
			var generations []uint64
			attach := func(_ context.Context, o frontend.AttachOptions) (Attached, error) {
				generations = append(generations, o.Generation)
				return fakeAttached{detached: &e.detached}, nil
			}
			e.s.cfg.Attach = attach
			req := e.stageReq(volA)
			req.PublishContext = tc.context
			e.stage(t, req)

			e.s = e.newServer(t)
			e.s.cfg.Attach = attach
			if err := e.s.Restore(context.Background()); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if !slices.Equal(generations, []uint64{7, 7}) {
				t.Errorf("attached at generations %v, want [7 7]", generations)
			}
		})
	}
}
