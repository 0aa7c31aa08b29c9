package csi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	"k8s.io/mount-utils"
	"k8s.io/utils/exec"

	"github.com/trireme-csi/trireme/pkg/frontend"
)

// newHostMounter mounts with the host's mount(8), and formats blank
// devices with its mkfs tools.
func newHostMounter() Mounter {
	return mount.NewSafeFormatAndMount(mount.New(""), exec.New())
}

// Restore brings back the volumes a previous run of the agent staged:
// Recover, then Reattach.
func (s *NodeServer) Restore(ctx context.Context) error {
	if err := s.Recover(); err != nil {
		return err
	}
	return s.Reattach(ctx)
}

// Recover reads the volumes a previous run of the agent staged, as its
// state directory records them, and clears what that run left: its FUSE
// servers died with it, so whatever was mounted from their loop devices
// only returns I/O errors. Recover detaches those mounts (lazily: a pod
// may still hold files open) and clears the leftover loop devices and
// FUSE mounts. The volumes are then known but unattached: Reattach, or
// a NodeStageVolume retry, attaches them again. Recover asks nothing of
// the network; it must run before the Node service serves, and before
// anything is attached under MountDir.
//
// Known limit: a pod that held files open on the volume keeps getting
// I/O errors on them; only new opens see the volume again. Its
// container also keeps the old mount if the kubelet's pod directory is
// not a shared mount. Keeping the FUSE connection across restarts (by
// handing /dev/fuse to the new process) would avoid both.
func (s *NodeServer) Recover() error {
	records, err := s.state.load()
	if err != nil {
		return err
	}
	for _, r := range records {
		s.detachStale(r)
	}
	if err := frontend.Cleanup(s.cfg.MountDir); err != nil {
		klog.ErrorS(err, "Cleaning up a previous run's attachments", "node", s.cfg.NodeID)
	}
	for _, r := range records {
		s.keepUnattached(r)
	}
	return nil
}

// Reattach attaches again, and mounts where they were, the volumes that
// Recover found and that are not attached yet. Each is claimed like an
// RPC would claim it; one an RPC holds is left to it. A volume that is
// no longer this node's (deleted, or published elsewhere) is forgotten.
func (s *NodeServer) Reattach(ctx context.Context) error {
	var errs []error
	for _, r := range s.unattached() {
		release, err := s.begin(r.VolumeID)
		if err != nil {
			continue
		}
		if err := s.restore(ctx, r); err != nil && !gone(err) {
			errs = append(errs, err)
		}
		release()
	}
	return errors.Join(errs...)
}

// KeepReattaching runs Reattach every interval until every recovered
// volume is attached or ctx ends: after a restart the controller, or the
// primaries, may take a while to answer.
func (s *NodeServer) KeepReattaching(ctx context.Context, interval time.Duration) {
	for {
		err := s.Reattach(ctx)
		if err == nil {
			return
		}
		klog.ErrorS(err, "Staged volumes not attached again yet; will retry", "node", s.cfg.NodeID, "retryIn", interval)
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// unattached returns the staged volumes that have no attachment.
func (s *NodeServer) unattached() []*stageRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*stageRecord
	for id, r := range s.staged {
		if s.attached[id] == nil {
			out = append(out, r)
		}
	}
	return out
}

// gone says whether a staged volume is no longer this node's: the
// controller deleted it, or published it to another node.
func gone(err error) bool {
	return errors.Is(err, ErrVolumeNotFound) || errors.Is(err, errNotPublishedHere)
}

// keepUnattached remembers a staged volume that is not attached, so
// that NodeStageVolume retries the attachment, NodePublishVolume refuses
// it (FAILED_PRECONDITION) and NodeUnstageVolume forgets it.
func (s *NodeServer) keepUnattached(r *stageRecord) {
	r.Device = ""
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staged[r.VolumeID] = r
}

// detachStale lazily unmounts what the previous run mounted for r.
func (s *NodeServer) detachStale(r *stageRecord) {
	paths := make([]string, 0, len(r.Targets)+1)
	for t := range r.Targets {
		paths = append(paths, t)
	}
	if !r.Block {
		paths = append(paths, r.StagingPath)
	}
	for _, p := range paths {
		for i := 0; i < 8 && unix.Unmount(p, unix.MNT_DETACH) == nil; i++ {
		}
	}
}

// restore attaches one recorded volume again and mounts it where it was.
// A volume the controller no longer knows is forgotten, as is one that
// is now published to another node: using it there could overwrite the
// other node's writes.
func (s *NodeServer) restore(ctx context.Context, r *stageRecord) error {
	if err := s.stillOurs(ctx, r); err != nil {
		return fmt.Errorf("restore %s: %w", r.VolumeID, err)
	}
	a, err := s.attach(ctx, r.VolumeID, r.Generation, r.ReadOnly)
	if err != nil {
		return fmt.Errorf("restore %s: %w", r.VolumeID, err)
	}
	r.Device = a.Device()
	if err := s.remount(r); err != nil {
		s.unmountRecorded(r)
		s.detachQuietly(ctx, r.VolumeID, a)
		r.Device = ""
		return fmt.Errorf("restore %s: %w", r.VolumeID, err)
	}
	if err := s.remember(r, a); err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Restored staged volume", "volume", r.VolumeID, "node", s.cfg.NodeID, "device", r.Device, "stagingPath", r.StagingPath, "targets", len(r.Targets))
	return nil
}

// stillOurs checks with the controller that the volume is still
// published to this node, and forgets it when it is gone.
func (s *NodeServer) stillOurs(ctx context.Context, r *stageRecord) error {
	gen, err := s.checkPublishedHere(ctx, r.VolumeID)
	if err == nil {
		r.Generation = gen
	}
	if !gone(err) {
		return err
	}
	klog.FromContext(ctx).Info("Forgetting a staged volume", "volume", r.VolumeID, "node", s.cfg.NodeID, "reason", err.Error())
	s.unmountRecorded(r)
	if _, ferr := s.forget(r.VolumeID); ferr != nil {
		return ferr
	}
	return err
}

// unmountRecorded unmounts the targets and staging path of r, after a
// failed remount; errors are left to the next NodeUnstageVolume.
func (s *NodeServer) unmountRecorded(r *stageRecord) {
	for target := range r.Targets {
		s.unmountIfMounted(target)
	}
	if !r.Block {
		s.unmountIfMounted(r.StagingPath)
	}
}

// remount mounts a re-attached volume at its staging path and targets.
func (s *NodeServer) remount(r *stageRecord) error {
	if !r.Block {
		if err := s.cfg.Mounter.Mount(r.Device, r.StagingPath, r.FSType, r.mountOptions()); err != nil {
			return err
		}
	}
	for target, ro := range r.Targets {
		if err := s.bind(r, stageRequest{target: target, readOnly: ro}); err != nil {
			return err
		}
	}
	return nil
}
