package csi

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
)

// NodeExpandVolume implements csipb.NodeServer: it grows the volume's
// device to the size the volume has now (ControllerExpandVolume grew
// it) and, for a mount volume, grows the filesystem online. It returns
// the device's size. A volume that did not grow is OK: expansion is
// idempotent.
//
// A device smaller than required_bytes after the refresh, or larger
// than limit_bytes, is OUT_OF_RANGE: the spec's code for a capacity
// range the plugin cannot honour, and in gRPC's words an error that
// "may be fixed if the system state changes" (the controller growing
// the volume). FAILED_PRECONDITION is kept for what the spec gives it:
// a filesystem that cannot grow while staged (here, a read-only one).
func (s *NodeServer) NodeExpandVolume(ctx context.Context, req *csipb.NodeExpandVolumeRequest) (*csipb.NodeExpandVolumeResponse, error) {
	er, err := validateExpand(req)
	if err != nil {
		return nil, err
	}
	release, err := s.begin(er.volumeID)
	if err != nil {
		return nil, err
	}
	defer release()
	size, err := s.expand(ctx, er)
	if err != nil {
		return nil, nodeStatus(err)
	}
	return &csipb.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

// expand grows the device, checks it against the capacity range, then
// grows the filesystem of a mount volume.
func (s *NodeServer) expand(ctx context.Context, er expandRequest) (int64, error) {
	r, err := s.expandedRecord(er)
	if err != nil {
		return 0, fmt.Errorf("expand %s: %w", er.volumeID, err)
	}
	a := s.attachment(r.VolumeID)
	if a == nil {
		return 0, fmt.Errorf("expand %s: %w: staging it again attaches it", r.VolumeID, errNotAttached)
	}
	size, err := a.Resize(ctx)
	if err != nil {
		return 0, fmt.Errorf("expand %s: %w", r.VolumeID, err)
	}
	if err := checkExpandedSize(size, er); err != nil {
		return 0, fmt.Errorf("expand %s: %w", r.VolumeID, err)
	}
	if !r.Block {
		if err := s.growFilesystem(r); err != nil {
			return 0, fmt.Errorf("expand %s: %w", r.VolumeID, err)
		}
	}
	s.logger(ctx, "expand").Info("Volume expanded", "device", r.Device, "size", size, "block", r.Block, "fsType", r.FSType)
	return size, nil
}

// expandedRecord returns the record of the volume to expand: staged
// here, at the volume path (its staging path or a publish target), with
// the access type the request names, if it names one.
func (s *NodeServer) expandedRecord(er expandRequest) (*stageRecord, error) {
	r := s.record(er.volumeID)
	if r == nil {
		return nil, fmt.Errorf("%w: %w", ErrVolumeNotFound, errNotStaged)
	}
	if !filepath.IsAbs(er.path) {
		return nil, fmt.Errorf("%w: %q is not an absolute path", errNotAtPath, er.path)
	}
	path := filepath.Clean(er.path)
	if _, ok := s.targets(r)[path]; !ok && path != r.StagingPath {
		return nil, fmt.Errorf("%w: %s is not where the volume is staged or published", errNotAtPath, path)
	}
	if er.staging != "" && er.staging != r.StagingPath {
		return nil, fmt.Errorf("%w: the volume is staged at %s, not %s", errNotAtPath, r.StagingPath, er.staging)
	}
	if er.hasCapability && er.block != r.Block {
		return nil, fmt.Errorf("%w: staged as block=%t, the request says block=%t", errAccessTypeDiffer, r.Block, er.block)
	}
	return r, nil
}

// checkExpandedSize checks the device's size against the capacity range.
func checkExpandedSize(size int64, er expandRequest) error {
	switch {
	case size < er.required:
		return fmt.Errorf("%w: the volume is %d bytes, below required_bytes %d; ControllerExpandVolume must grow it first",
			errCapacity, size, er.required)
	case er.limit > 0 && size > er.limit:
		return fmt.Errorf("%w: the volume is %d bytes, above limit_bytes %d", errCapacity, size, er.limit)
	}
	return nil
}

// growFilesystem grows the staged filesystem to fill its device, while
// mounted. A read-only one cannot grow.
func (s *NodeServer) growFilesystem(r *stageRecord) error {
	if r.ReadOnly {
		return fmt.Errorf("%w: staged read-only at %s", errReadOnlyFS, r.StagingPath)
	}
	if err := s.checkStaged(r); err != nil {
		return err
	}
	if _, err := s.cfg.Resizer.Resize(r.Device, r.StagingPath); err != nil {
		hint := ""
		if r.FSType == "ext4" && strings.Contains(err.Error(), "Permission denied") {
			// The kernel grows a mounted ext4 only for CAP_SYS_RESOURCE.
			hint = " (growing a mounted ext4 needs CAP_SYS_RESOURCE: run the node plugin privileged)"
		}
		return fmt.Errorf("grow %s filesystem on %s at %s: %w%s", r.FSType, r.Device, r.StagingPath, err, hint)
	}
	return nil
}
