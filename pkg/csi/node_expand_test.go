package csi

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
)

const (
	oldSize = 1 << 30
	newSize = 2 << 30
)

// expandReq asks to expand volA, published at the target, to newSize.
func (e *nodeEnv) expandReq() *csipb.NodeExpandVolumeRequest {
	return &csipb.NodeExpandVolumeRequest{VolumeId: volA, VolumePath: e.path("target"),
		StagingTargetPath: e.path("staging"), VolumeCapability: writer,
		CapacityRange: &csipb.CapacityRange{RequiredBytes: newSize}}
}

// stagedAndPublished stages and publishes volA as an ext4 mount volume
// whose device grows to newSize.
func stagedAndPublished(t *testing.T) *nodeEnv {
	e := newNodeEnv(t)
	e.dev.size = newSize
	e.stage(t, e.stageReq(volA))
	e.publish(t, e.publishReq(volA))
	return e
}

func TestNodeExpandVolumeCodes(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *nodeEnv)
		edit  func(e *nodeEnv, r *csipb.NodeExpandVolumeRequest)
		want  codes.Code
	}{
		{"ok", nil, func(*nodeEnv, *csipb.NodeExpandVolumeRequest) {}, codes.OK},
		{"at the staging path", nil, func(e *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumePath = e.path("staging") }, codes.OK},
		{"no capacity range", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.CapacityRange = nil }, codes.OK},
		{"no capability", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumeCapability = nil }, codes.OK},
		{"no staging path", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.StagingTargetPath = "" }, codes.OK},
		{"already larger than required", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.CapacityRange = &csipb.CapacityRange{RequiredBytes: oldSize}
		}, codes.OK},
		{"within the limit", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.CapacityRange.LimitBytes = newSize
		}, codes.OK},
		{"no volume id", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumeId = "" }, codes.InvalidArgument},
		{"no volume path", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumePath = "" }, codes.InvalidArgument},
		{"relative staging path", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.StagingTargetPath = "staging" }, codes.InvalidArgument},
		{"negative required bytes", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.CapacityRange = &csipb.CapacityRange{RequiredBytes: -1}
		}, codes.InvalidArgument},
		{"negative limit bytes", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.CapacityRange = &csipb.CapacityRange{LimitBytes: -1}
		}, codes.InvalidArgument},
		{"limit below required", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.CapacityRange = &csipb.CapacityRange{RequiredBytes: newSize, LimitBytes: oldSize}
		}, codes.InvalidArgument},
		{"capability without access mode", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.VolumeCapability = &csipb.VolumeCapability{AccessType: writer.AccessType}
		}, codes.InvalidArgument},
		{"block capability for a mount volume", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.VolumeCapability = blockCap()
		}, codes.InvalidArgument},
		{"unknown volume", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumeId = volB }, codes.NotFound},
		{"ill-formed volume id", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumeId = "no/such" }, codes.NotFound},
		{"relative volume path", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumePath = "some/path" }, codes.NotFound},
		{"another path", nil, func(e *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.VolumePath = e.path("elsewhere") }, codes.NotFound},
		{"another staging path", nil, func(e *nodeEnv, r *csipb.NodeExpandVolumeRequest) { r.StagingTargetPath = e.path("elsewhere") }, codes.NotFound},
		{"volume not grown yet", func(e *nodeEnv) { e.dev.size = oldSize }, func(*nodeEnv, *csipb.NodeExpandVolumeRequest) {}, codes.OutOfRange},
		{"volume above the limit", nil, func(_ *nodeEnv, r *csipb.NodeExpandVolumeRequest) {
			r.CapacityRange = &csipb.CapacityRange{RequiredBytes: oldSize, LimitBytes: oldSize}
		}, codes.OutOfRange},
		{"volume shrank", func(e *nodeEnv) { e.dev.err = nbdclient.ErrSizeChanged }, func(*nodeEnv, *csipb.NodeExpandVolumeRequest) {}, codes.Internal},
		{"filesystem cannot grow", func(e *nodeEnv) { e.resizer.err = errors.New("resize2fs: exit status 1") },
			func(*nodeEnv, *csipb.NodeExpandVolumeRequest) {}, codes.Internal},
		{"staging mount gone", func(e *nodeEnv) {
			if err := e.mounter.Unmount(e.path("staging")); err != nil {
				panic(err)
			}
		}, func(*nodeEnv, *csipb.NodeExpandVolumeRequest) {}, codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := stagedAndPublished(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			req := e.expandReq()
			tt.edit(e, req)
			resp, err := e.s.NodeExpandVolume(context.Background(), req)
			wantCode(t, err, tt.want)
			if err == nil && resp.GetCapacityBytes() != newSize {
				t.Errorf("capacity_bytes %d, want %d", resp.GetCapacityBytes(), newSize)
			}
		})
	}
}

func TestNodeExpandVolumeGrowsTheFilesystemOfAMountVolume(t *testing.T) {
	e := stagedAndPublished(t)
	for range 2 { // idempotent
		if _, err := e.s.NodeExpandVolume(context.Background(), e.expandReq()); err != nil {
			t.Fatalf("NodeExpandVolume: %v", err)
		}
	}
	want := []string{"/dev/null " + e.path("staging"), "/dev/null " + e.path("staging")}
	if !slices.Equal(e.resizer.calls, want) || e.dev.resizes != 2 {
		t.Errorf("filesystem resizes %q and device resizes %d, want %q and 2", e.resizer.calls, e.dev.resizes, want)
	}
}

func TestNodeExpandVolumeGrowsOnlyTheDeviceOfABlockVolume(t *testing.T) {
	e := newNodeEnv(t)
	e.dev.size = newSize
	stage := e.stageReq(volA)
	stage.VolumeCapability = blockCap()
	e.stage(t, stage)
	req := e.expandReq()
	req.VolumePath, req.VolumeCapability = e.path("staging"), nil
	resp, err := e.s.NodeExpandVolume(context.Background(), req)
	if err != nil || resp.GetCapacityBytes() != newSize {
		t.Fatalf("NodeExpandVolume = %v, %v; want %d bytes", resp, err, newSize)
	}
	if e.dev.resizes != 1 || len(e.resizer.calls) != 0 {
		t.Errorf("device resizes %d, filesystem resizes %q; want 1 and none", e.dev.resizes, e.resizer.calls)
	}
	req.VolumeCapability = writer
	_, err = e.s.NodeExpandVolume(context.Background(), req)
	wantCode(t, err, codes.InvalidArgument)
}

func TestNodeExpandVolumeOfAReadOnlyFilesystemFails(t *testing.T) {
	e := newNodeEnv(t)
	e.dev.size = newSize
	stage := e.stageReq(volA)
	stage.VolumeCapability = mountCap("ext4", csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY)
	e.stage(t, stage)
	req := e.expandReq()
	req.VolumePath, req.VolumeCapability = e.path("staging"), stage.VolumeCapability
	_, err := e.s.NodeExpandVolume(context.Background(), req)
	wantCode(t, err, codes.FailedPrecondition)
	if len(e.resizer.calls) != 0 {
		t.Errorf("filesystem resizes %q, want none", e.resizer.calls)
	}
}

func TestNodeExpandVolumeWhileAnotherOperationRunsIsAborted(t *testing.T) {
	e := stagedAndPublished(t)
	release, err := e.s.begin(volA)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	_, err = e.s.NodeExpandVolume(context.Background(), e.expandReq())
	wantCode(t, err, codes.Aborted)
}

// TestNodeExpandVolumeNamesTheMissingCapability: resize2fs refused for
// want of CAP_SYS_RESOURCE gets an error that says so, not a bare
// "Permission denied".
func TestNodeExpandVolumeNamesTheMissingCapability(t *testing.T) {
	e := stagedAndPublished(t)
	e.resizer.err = errors.New("resize of device /dev/null failed: exit status 1. resize2fs output: Permission denied to resize filesystem")
	_, err := e.s.NodeExpandVolume(context.Background(), e.expandReq())
	if err == nil || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		t.Errorf("NodeExpandVolume: %v, want an error naming CAP_SYS_RESOURCE", err)
	}
}
