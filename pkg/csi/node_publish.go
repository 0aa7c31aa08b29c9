package csi

import (
	"k8s.io/klog/v2"
	"strings"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"syscall"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
)

// NodePublishVolume implements csipb.NodeServer: it bind-mounts the
// staged filesystem (or, for a block volume, the device) at the target,
// read-only when asked. It refuses, with FAILED_PRECONDITION, to publish
// a volume whose staging path does not hold it, so that an empty
// directory is never handed to a pod.
func (s *NodeServer) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	pr, err := validateNodePublish(req)
	if err != nil {
		return nil, err
	}
	if !wellFormedID(pr.volumeID) {
		return nil, nodeStatus(fmt.Errorf("publish %s: %w", pr.volumeID, ErrVolumeNotFound))
	}
	release, err := s.begin(pr.volumeID)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.publish(ctx, pr); err != nil {
		return nil, nodeStatus(err)
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

func (s *NodeServer) publish(ctx context.Context, pr stageRequest) error {
	r, err := s.stagedFor(ctx, pr)
	if err != nil {
		return err
	}
	if err := s.checkStaged(r); err != nil {
		return err
	}
	done, err := s.checkRepublish(r, pr)
	if err != nil || done {
		return err
	}
	if err := checkTargetPlace(r, pr.target); err != nil {
		return err
	}
	if err := s.bind(r, pr); err != nil {
		return fmt.Errorf("publish %s at %s: %w", pr.volumeID, pr.target, err)
	}
	if err := s.setTarget(r, pr.target, pr.readOnly, true); err != nil {
		s.unbind(pr.target)
		return err
	}
	s.logger(ctx, "publish").Info("Volume published", "target", pr.target, "readOnly", pr.readOnly, "device", r.Device)
	return nil
}

// checkTargetPlace refuses a target that is a symbolic link (the bind
// mount would land wherever it points) or that lies inside the staging
// path (it would create a directory in the volume's own filesystem).
func checkTargetPlace(r *stageRecord, target string) error {
	if fi, err := os.Lstat(target); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%w: %s is a symbolic link", errInvalidTarget, target)
	}
	staging := filepath.Clean(r.StagingPath)
	if target == staging || strings.HasPrefix(target, staging+string(filepath.Separator)) {
		return fmt.Errorf("%w: %s lies inside the staging path %s", errInvalidTarget, target, staging)
	}
	return nil
}

// stagedFor returns the record a publish builds on: the volume must be
// staged at the request's staging path with the same access type.
func (s *NodeServer) stagedFor(ctx context.Context, pr stageRequest) (*stageRecord, error) {
	r := s.record(pr.volumeID)
	if r == nil {
		if _, err := s.cfg.Locator.PrimaryAddress(ctx, pr.volumeID); errors.Is(err, ErrVolumeNotFound) {
			return nil, fmt.Errorf("publish %s: %w", pr.volumeID, err)
		}
		return nil, fmt.Errorf("publish %s: %w", pr.volumeID, errNotStaged)
	}
	switch {
	case r.StagingPath != pr.staging:
		return nil, fmt.Errorf("publish %s: %w: at %s, not %s", pr.volumeID, errStagedElsewhere, r.StagingPath, pr.staging)
	case r.Block != pr.block:
		return nil, fmt.Errorf("publish %s: %w", pr.volumeID, errAccessTypeChange)
	}
	return r, nil
}

// checkRepublish says whether the target already holds this volume with
// the same flag (done), and refuses a target that holds anything else.
func (s *NodeServer) checkRepublish(r *stageRecord, pr stageRequest) (bool, error) {
	mounted, err := s.cfg.Mounter.IsMountPoint(pr.target)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !mounted) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check mount %s: %w", pr.target, err)
	}
	ro, ours := s.targets(r)[pr.target]
	if !ours || ro != pr.readOnly {
		return false, fmt.Errorf("%w: %s is already mounted", errIncompatible, pr.target)
	}
	return true, nil
}

// bind mounts the staged volume at the target, creating the target (a
// directory for a filesystem, a file for a block device).
func (s *NodeServer) bind(r *stageRecord, pr stageRequest) error {
	source, ensure := r.StagingPath, ensureDir
	if r.Block {
		source, ensure = r.Device, ensureFile
	}
	created, err := ensure(pr.target)
	if err != nil {
		return err
	}
	opts := []string{"bind"}
	if pr.readOnly {
		opts = append(opts, "ro")
	}
	if err := s.cfg.Mounter.Mount(source, pr.target, "", opts); err != nil {
		if created {
			os.Remove(pr.target)
		}
		return err
	}
	return nil
}

// ensureFile creates an empty file at path, and its parent directory,
// unless the file exists; it says whether it created the file.
func ensureFile(path string) (bool, error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return false, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o640)
	if err != nil {
		return false, err
	}
	return true, f.Close()
}

// unbind unmounts and removes a target. A target directory that still
// holds files once unmounted was not made by this driver: it is left
// where it is, and the unpublish succeeds.
func (s *NodeServer) unbind(target string) error {
	if err := s.unmountIfMounted(target); err != nil {
		return err
	}
	return removeTarget(target)
}

// removeTarget removes an unmounted target. A directory that still holds
// files was not made by this driver and is left in place.
func removeTarget(target string) error {
	err := os.Remove(target)
	if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
		klog.InfoS("Leaving a non-empty target directory in place", "target", target)
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", target, err)
	}
	return nil
}

// targets returns a copy of the record's publish targets.
func (s *NodeServer) targets(r *stageRecord) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(r.Targets)
}

// setTarget adds or removes a publish target and persists the record.
func (s *NodeServer) setTarget(r *stageRecord, target string, readOnly, add bool) error {
	s.mu.Lock()
	next := *r
	next.Targets = maps.Clone(r.Targets)
	if next.Targets == nil {
		next.Targets = map[string]bool{}
	}
	if add {
		next.Targets[target] = readOnly
	} else {
		delete(next.Targets, target)
	}
	s.mu.Unlock()
	if err := s.state.save(&next); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Targets = next.Targets
	return nil
}

// NodeUnpublishVolume implements csipb.NodeServer: it unmounts the
// target and removes it. A target that is already gone is OK.
func (s *NodeServer) NodeUnpublishVolume(ctx context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	if err := validateVolumeAndPath(req.GetVolumeId(), "target_path", req.GetTargetPath()); err != nil {
		return nil, err
	}
	release, err := s.begin(req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.unpublish(ctx, req.GetVolumeId(), filepath.Clean(req.GetTargetPath())); err != nil {
		return nil, nodeStatus(err)
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}

// unpublish removes a target of a staged volume. A target the record
// does not list is unmounted only when it holds the volume's device;
// otherwise it is removed only when nothing is mounted there: it is not
// this driver's to unmount.
func (s *NodeServer) unpublish(ctx context.Context, volumeID, target string) error {
	r := s.record(volumeID)
	if r != nil && filepath.Clean(r.StagingPath) == target {
		return fmt.Errorf("%w: %s is the volume's staging path, not a publish target", errInvalidTarget, target)
	}
	if r == nil || !s.hasTarget(r, target) && !s.holdsDevice(target, r.Device) {
		return s.removeStrayTarget(target)
	}
	if err := s.unbind(target); err != nil {
		return fmt.Errorf("unpublish %s from %s: %w", volumeID, target, err)
	}
	if err := s.setTarget(r, target, false, false); err != nil {
		return err
	}
	s.logger(ctx, "unpublish").Info("Volume unpublished", "target", target)
	return nil
}

// holdsDevice says whether target is a bind mount of device, or of a
// filesystem on it: a publish whose record was not saved before a crash.
func (s *NodeServer) holdsDevice(target, device string) bool {
	dev, err := s.mountedDevice(target)
	return err == nil && dev == device
}

func (s *NodeServer) hasTarget(r *stageRecord, target string) bool {
	_, ok := s.targets(r)[target]
	return ok
}

// removeStrayTarget removes an unmounted target left by a publish whose
// record was lost; a mount there is left alone.
func (s *NodeServer) removeStrayTarget(target string) error {
	mounted, err := s.cfg.Mounter.IsMountPoint(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil || mounted {
		return fmt.Errorf("%w: %s", errNotAtPath, target)
	}
	return removeTarget(target)
}
