package csi

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
)

// NodeGetVolumeStats implements csipb.NodeServer: bytes and inodes of a
// mounted volume, bytes of a block volume, and the volume's condition.
func (s *NodeServer) NodeGetVolumeStats(ctx context.Context, req *csipb.NodeGetVolumeStatsRequest) (*csipb.NodeGetVolumeStatsResponse, error) {
	if err := validateStats(req); err != nil {
		return nil, err
	}
	r, err := s.recordAt(req.GetVolumeId(), req.GetVolumePath())
	if err != nil {
		return nil, nodeStatus(err)
	}
	usage, err := s.usage(r, filepath.Clean(req.GetVolumePath()))
	if err != nil {
		return nil, nodeStatus(err)
	}
	return &csipb.NodeGetVolumeStatsResponse{Usage: usage, VolumeCondition: s.condition(ctx, r.VolumeID)}, nil
}

// recordAt returns the record of a volume staged or published at path.
func (s *NodeServer) recordAt(volumeID, path string) (*stageRecord, error) {
	r := s.record(volumeID)
	if r == nil {
		return nil, fmt.Errorf("stats of %s: %w: %w", volumeID, ErrVolumeNotFound, errNotStaged)
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%w: %q is not an absolute path", errNotAtPath, path)
	}
	path = filepath.Clean(path)
	if _, ok := s.targets(r)[path]; ok || (path == r.StagingPath && !r.Block) {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%w: %w", errNotAtPath, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("%w: %s is not where %s is staged or published", errNotAtPath, path, volumeID)
}

// usage measures the volume at path.
func (s *NodeServer) usage(r *stageRecord, path string) ([]*csipb.VolumeUsage, error) {
	if r.Block {
		size, err := deviceSize(path)
		if err != nil {
			return nil, err
		}
		return []*csipb.VolumeUsage{{Unit: csipb.VolumeUsage_BYTES, Total: size}}, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize)
	return []*csipb.VolumeUsage{
		{Unit: csipb.VolumeUsage_BYTES, Total: int64(st.Blocks) * bs, Available: int64(st.Bavail) * bs,
			Used: int64(st.Blocks-st.Bfree) * bs},
		{Unit: csipb.VolumeUsage_INODES, Total: int64(st.Files), Available: int64(st.Ffree),
			Used: int64(st.Files - st.Ffree)},
	}, nil
}

// deviceSize returns the size of the block device at path.
func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	size, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return 0, fmt.Errorf("BLKGETSIZE64 %s: %w", path, err)
	}
	return int64(size), nil
}

// condition asks the locator how the volume's replicas are doing. When
// it cannot tell, the condition says so and is abnormal: the node cannot
// vouch for a volume it cannot locate.
func (s *NodeServer) condition(ctx context.Context, volumeID string) *csipb.VolumeCondition {
	h, err := s.cfg.Locator.Health(ctx, volumeID)
	if err != nil {
		return &csipb.VolumeCondition{Abnormal: true, Message: "health unknown: " + err.Error()}
	}
	return &csipb.VolumeCondition{Abnormal: h.Degraded, Message: h.Message}
}
