package csi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/frontend"
)

// NodeStageVolume implements csipb.NodeServer: it attaches the volume as
// a loop device and, for mount volumes, formats it if blank and mounts
// it at the staging path. A retry with the same arguments is OK.
func (s *NodeServer) NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
	sr, err := validateStage(req)
	if err != nil {
		return nil, err
	}
	if !wellFormedID(sr.volumeID) {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", sr.volumeID)
	}
	release, err := s.begin(sr.volumeID)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.stage(ctx, sr); err != nil {
		return nil, nodeStatus(err)
	}
	return &csipb.NodeStageVolumeResponse{}, nil
}

// stage stages a volume, or checks that an earlier stage matches.
func (s *NodeServer) stage(ctx context.Context, sr stageRequest) error {
	if r := s.record(sr.volumeID); r != nil {
		return s.restage(ctx, r, sr)
	}
	gen, err := s.admit(ctx, sr.volumeID)
	if err != nil {
		return fmt.Errorf("stage %s: %w", sr.volumeID, err)
	}
	// The controller's generation is the one that counts: a stage without
	// a publish context, or with a forged one, must not escape fencing.
	sr.generation = gen
	a, err := s.attach(ctx, sr.volumeID, sr.generation, sr.readerOnly)
	if err != nil {
		return fmt.Errorf("stage %s: %w", sr.volumeID, err)
	}
	r := &stageRecord{VolumeID: sr.volumeID, StagingPath: sr.staging, Block: sr.block,
		FSType: sr.fsType, MountFlags: sr.flags, ReadOnly: sr.readerOnly, Device: a.Device(),
		Generation: sr.generation}
	if err := s.present(ctx, r); err != nil {
		s.detachQuietly(ctx, r.VolumeID, a)
		return fmt.Errorf("stage %s: %w", sr.volumeID, err)
	}
	if err := s.remember(r, a); err != nil {
		s.unpresent(r)
		s.detachQuietly(ctx, r.VolumeID, a)
		return err
	}
	s.logger(ctx, "stage").Info("Volume staged", "device", r.Device, "stagingPath", r.StagingPath, "block", r.Block, "fsType", r.FSType)
	return nil
}

// restage answers a stage of a volume already staged: OK when it
// matches, and the volume is still in place. A volume a restart could
// not attach again is attached now.
func (s *NodeServer) restage(ctx context.Context, r *stageRecord, sr stageRequest) error {
	switch {
	case r.StagingPath != sr.staging:
		return fmt.Errorf("%w: %s is staged at %s, not %s", errIncompatible, r.VolumeID, r.StagingPath, sr.staging)
	case !r.compatible(sr):
		return fmt.Errorf("%w: %s is staged with another access type or filesystem", errIncompatible, r.VolumeID)
	case s.attachment(r.VolumeID) == nil:
		return s.restore(ctx, r)
	}
	return s.checkStaged(r)
}

// admit checks that the node may stage one more volume, and this one.
func (s *NodeServer) admit(ctx context.Context, volumeID string) (uint64, error) {
	if s.cfg.MaxVolumes > 0 && s.stagedCount() >= int(s.cfg.MaxVolumes) {
		return 0, fmt.Errorf("%w: %d staged", errTooManyVolumes, s.cfg.MaxVolumes)
	}
	return s.checkPublishedHere(ctx, volumeID)
}

// checkPublishedHere refuses a volume that ControllerPublishVolume did
// not attach to this node: another node may be writing to it. It returns
// the attachment generation the controller recorded.
func (s *NodeServer) checkPublishedHere(ctx context.Context, volumeID string) (uint64, error) {
	node, gen, err := s.cfg.Locator.PublishedNode(ctx, volumeID)
	if err != nil {
		return 0, err
	}
	if node != s.cfg.NodeID {
		return 0, fmt.Errorf("%w: it is published to %q, this is %s", errNotPublishedHere, node, s.cfg.NodeID)
	}
	return gen, nil
}

func (s *NodeServer) stagedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.staged)
}

// attach presents the volume as a loop device, talking to whichever node
// is its primary at each (re)connection, at the attachment generation
// ControllerPublish gave this node.
func (s *NodeServer) attach(ctx context.Context, volumeID string, generation uint64, readOnly bool) (Attached, error) {
	return s.cfg.Attach(ctx, frontend.AttachOptions{
		VolumeID:   volumeID,
		Generation: generation,
		ReadOnly:   readOnly,
		Resolve: func(ctx context.Context) (string, error) {
			return s.cfg.Locator.PrimaryAddress(ctx, volumeID)
		},
		MountDir:     s.cfg.MountDir,
		RetryTimeout: s.cfg.IOTimeout,
		TLS:          s.cfg.FrontendTLS,
	})
}

// present makes the staged volume usable at its staging path: a mount
// volume is formatted if blank and mounted; a block volume needs nothing
// beyond its device.
func (s *NodeServer) present(ctx context.Context, r *stageRecord) error {
	if r.Block {
		return nil
	}
	created, err := ensureDir(r.StagingPath)
	if err != nil {
		return err
	}
	r.CreatedStaging = created
	if err := s.cfg.Mounter.FormatAndMount(r.Device, r.StagingPath, r.FSType, r.mountOptions()); err != nil {
		s.removeCreatedStaging(r)
		return fmt.Errorf("format and mount %s at %s: %w", r.Device, r.StagingPath, err)
	}
	return nil
}

// unpresent undoes present.
func (s *NodeServer) unpresent(r *stageRecord) error {
	if r.Block {
		return nil
	}
	if err := s.unmountIfMounted(r.StagingPath); err != nil {
		return err
	}
	s.removeCreatedStaging(r)
	return nil
}

func (s *NodeServer) removeCreatedStaging(r *stageRecord) {
	if r.CreatedStaging {
		os.Remove(r.StagingPath)
	}
}

// ensureDir creates dir if missing and says whether it did.
func ensureDir(dir string) (bool, error) {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return false, nil
	case err == nil:
		return false, fmt.Errorf("%s exists and is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return false, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return false, err
	}
	return true, nil
}

// detachQuietly detaches after a failure, logging what it cannot undo.
func (s *NodeServer) detachQuietly(ctx context.Context, volumeID string, a Attached) {
	if err := a.Detach(context.WithoutCancel(ctx)); err != nil {
		s.logger(ctx, "stage").Error(err, "Detaching after a failed stage", "volume", volumeID)
	}
}

// checkStaged says whether a staged volume is still in place: its device
// exists and, for a mount volume, is what is mounted at the staging path.
func (s *NodeServer) checkStaged(r *stageRecord) error {
	fi, err := os.Stat(r.Device)
	if err != nil || fi.Mode()&fs.ModeDevice == 0 {
		return fmt.Errorf("%w: device %s of %s is gone", errStagingNotReady, r.Device, r.VolumeID)
	}
	if r.Block {
		return nil
	}
	dev, err := s.mountedDevice(r.StagingPath)
	if err != nil {
		return err
	}
	if dev != r.Device {
		return fmt.Errorf("%w: %s holds %q, not %s of %s", errStagingNotReady, r.StagingPath, dev, r.Device, r.VolumeID)
	}
	return nil
}

// mountedDevice returns the source of the mount at path, or "" when path
// is not a mount point.
func (s *NodeServer) mountedDevice(path string) (string, error) {
	mps, err := s.cfg.Mounter.List()
	if err != nil {
		return "", fmt.Errorf("list mounts: %w", err)
	}
	dev := ""
	for _, mp := range mps {
		if mp.Path == path {
			dev = mp.Device // the last mount at path is the visible one
		}
	}
	return dev, nil
}

// unmountIfMounted unmounts path while it is a mount point.
func (s *NodeServer) unmountIfMounted(path string) error {
	for range 8 { // stacked mounts come off one at a time
		mounted, err := s.cfg.Mounter.IsMountPoint(path)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !mounted) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("check mount %s: %w", path, err)
		}
		if err := s.cfg.Mounter.Unmount(path); err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
	}
	return fmt.Errorf("unmount %s: still mounted", path)
}

// NodeUnstageVolume implements csipb.NodeServer: it unmounts the staging
// path and detaches the volume. A volume not staged here is OK.
func (s *NodeServer) NodeUnstageVolume(ctx context.Context, req *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	if err := validateVolumeAndPath(req.GetVolumeId(), "staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	release, err := s.begin(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.unstage(ctx, req.GetVolumeId()); err != nil {
		return nil, nodeStatus(err)
	}
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func (s *NodeServer) unstage(ctx context.Context, volumeID string) error {
	r := s.record(volumeID)
	if r == nil {
		return nil
	}
	if err := s.checkUnpublished(r); err != nil {
		return err
	}
	if err := s.unpresent(r); err != nil {
		return fmt.Errorf("unstage %s: %w", volumeID, err)
	}
	if a := s.attachment(volumeID); a != nil {
		if err := a.Detach(ctx); err != nil {
			return fmt.Errorf("unstage %s: %w", volumeID, err)
		}
	}
	if _, err := s.forget(volumeID); err != nil {
		return err
	}
	s.logger(ctx, "unstage").Info("Volume unstaged", "device", r.Device, "stagingPath", r.StagingPath)
	return nil
}

// checkUnpublished refuses to unstage a volume still bound somewhere.
func (s *NodeServer) checkUnpublished(r *stageRecord) error {
	for target := range s.targets(r) {
		if mounted, err := s.cfg.Mounter.IsMountPoint(target); err == nil && mounted {
			return fmt.Errorf("%w: %s at %s", errStillPublished, r.VolumeID, target)
		}
	}
	return nil
}

func (s *NodeServer) attachment(volumeID string) Attached {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attached[volumeID]
}
