package csi

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// stageRequest is a validated NodeStageVolume or NodePublishVolume.
type stageRequest struct {
	volumeID string
	staging  string
	target   string
	block    bool
	fsType   string
	flags    []string
	readOnly bool
	// readerOnly is set for SINGLE_NODE_READER_ONLY: the volume is
	// attached and mounted read-only, and published read-only.
	readerOnly bool
	// generation is the attachment generation from the publish context;
	// 0 when there is none (see frontend.AttachOptions.Generation).
	generation uint64
}

func isReaderOnly(c *csipb.VolumeCapability) bool {
	return c.GetAccessMode().GetMode() == csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
}

// validatePath accepts an absolute path without ".." elements or NUL
// bytes; anything else is INVALID_ARGUMENT naming the field.
func validatePath(field, p string) error {
	switch {
	case p == "":
		return status.Errorf(codes.InvalidArgument, "%s: required", field)
	case !filepath.IsAbs(p):
		return status.Errorf(codes.InvalidArgument, "%s: %q is not an absolute path", field, p)
	case strings.ContainsRune(p, 0):
		return status.Errorf(codes.InvalidArgument, "%s: contains a NUL byte", field)
	case slices.Contains(strings.Split(p, "/"), ".."):
		return status.Errorf(codes.InvalidArgument, "%s: %q contains \"..\"", field, p)
	}
	return nil
}

// validateNodeCapability checks one capability and returns its access
// type and filesystem; an empty fs_type falls back to the volume
// context's, then to DefaultFSType.
func validateNodeCapability(c *csipb.VolumeCapability, volumeContext map[string]string) (block bool, fsType string, err error) {
	if c == nil {
		return false, "", status.Error(codes.InvalidArgument, "volume_capability: required")
	}
	if _, err := capability(c); err != nil {
		return false, "", status.Errorf(codes.InvalidArgument, "volume_capability: %v", err)
	}
	if c.GetBlock() != nil {
		return true, "", nil
	}
	fsType = c.GetMount().GetFsType()
	if fsType == "" {
		fsType = volumeContext[ContextFSType]
	}
	if fsType == "" {
		return false, DefaultFSType, nil
	}
	if !slices.Contains(supportedFSTypes, fsType) {
		return false, "", status.Errorf(codes.InvalidArgument, "volume_context %s: %q is not one of %s",
			ContextFSType, fsType, strings.Join(supportedFSTypes, ", "))
	}
	return false, fsType, nil
}

// validateStage checks a NodeStageVolume request.
func validateStage(req *csipb.NodeStageVolumeRequest) (stageRequest, error) {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return stageRequest{}, err
	}
	if err := validatePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return stageRequest{}, err
	}
	block, fsType, err := validateNodeCapability(req.GetVolumeCapability(), req.GetVolumeContext())
	if err != nil {
		return stageRequest{}, err
	}
	gen, err := publishGeneration(req.GetPublishContext())
	if err != nil {
		return stageRequest{}, err
	}
	return stageRequest{
		volumeID: req.GetVolumeId(), staging: filepath.Clean(req.GetStagingTargetPath()),
		block: block, fsType: fsType, flags: req.GetVolumeCapability().GetMount().GetMountFlags(),
		readerOnly: isReaderOnly(req.GetVolumeCapability()), generation: gen,
	}, nil
}

// publishGeneration reads the attachment generation ControllerPublish put
// in the publish context; a context without one gives 0.
func publishGeneration(publishContext map[string]string) (uint64, error) {
	v, ok := publishContext[PublishGeneration]
	if !ok {
		return 0, nil
	}
	gen, err := strconv.ParseUint(v, 10, 64)
	if err != nil || gen == 0 {
		return 0, status.Errorf(codes.InvalidArgument, "publish_context %s: %q is not a positive integer", PublishGeneration, v)
	}
	return gen, nil
}

// validateNodePublish checks a NodePublishVolume request. The staging path
// is required: the Node service advertises STAGE_UNSTAGE_VOLUME.
func validateNodePublish(req *csipb.NodePublishVolumeRequest) (stageRequest, error) {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return stageRequest{}, err
	}
	if err := validatePath("target_path", req.GetTargetPath()); err != nil {
		return stageRequest{}, err
	}
	if err := validatePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return stageRequest{}, err
	}
	block, fsType, err := validateNodeCapability(req.GetVolumeCapability(), req.GetVolumeContext())
	if err != nil {
		return stageRequest{}, err
	}
	return stageRequest{
		volumeID: req.GetVolumeId(), staging: filepath.Clean(req.GetStagingTargetPath()),
		target: filepath.Clean(req.GetTargetPath()), block: block, fsType: fsType,
		flags:      req.GetVolumeCapability().GetMount().GetMountFlags(),
		readOnly:   req.GetReadonly() || isReaderOnly(req.GetVolumeCapability()),
		readerOnly: isReaderOnly(req.GetVolumeCapability()),
	}, nil
}

// validateVolumeAndPath checks the volume id and one path of an
// unpublish or unstage request.
func validateVolumeAndPath(volumeID, field, path string) error {
	if err := validateVolumeID(volumeID); err != nil {
		return err
	}
	return validatePath(field, path)
}

// validateStats checks a NodeGetVolumeStats request. A relative or
// missing volume path is left to the handler: it names no volume, which
// is NOT_FOUND.
func validateStats(req *csipb.NodeGetVolumeStatsRequest) error {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return err
	}
	if req.GetVolumePath() == "" {
		return status.Error(codes.InvalidArgument, "volume_path: required")
	}
	return nil
}

// expandRequest is a validated NodeExpandVolume.
type expandRequest struct {
	volumeID string
	path     string // as given; a relative one names no volume
	staging  string // "" when not given
	required int64
	limit    int64
	// hasCapability says volume_capability was given, and block is its
	// access type.
	hasCapability bool
	block         bool
}

// validateExpand checks a NodeExpandVolume request. As in
// validateStats, a relative volume path is left to the handler: it
// names no volume, which is NOT_FOUND.
func validateExpand(req *csipb.NodeExpandVolumeRequest) (expandRequest, error) {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return expandRequest{}, err
	}
	if req.GetVolumePath() == "" {
		return expandRequest{}, status.Error(codes.InvalidArgument, "volume_path: required")
	}
	er := expandRequest{volumeID: req.GetVolumeId(), path: req.GetVolumePath()}
	if p := req.GetStagingTargetPath(); p != "" {
		if err := validatePath("staging_target_path", p); err != nil {
			return expandRequest{}, err
		}
		er.staging = filepath.Clean(p)
	}
	var err error
	if er.required, er.limit, err = validateExpandRange(req.GetCapacityRange()); err != nil {
		return expandRequest{}, err
	}
	if c := req.GetVolumeCapability(); c != nil {
		if er.block, _, err = validateNodeCapability(c, nil); err != nil {
			return expandRequest{}, err
		}
		er.hasCapability = true
	}
	return er, nil
}

// validateExpandRange checks the capacity range of an expansion: no
// negative bytes, and a limit, when set, at least the required bytes.
func validateExpandRange(r *csipb.CapacityRange) (required, limit int64, err error) {
	required, limit = r.GetRequiredBytes(), r.GetLimitBytes()
	switch {
	case required < 0 || limit < 0:
		return 0, 0, status.Errorf(codes.InvalidArgument, "capacity_range: negative bytes (required %d, limit %d)", required, limit)
	case limit > 0 && required > limit:
		return 0, 0, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d exceeds limit_bytes %d", required, limit)
	}
	return required, limit, nil
}
