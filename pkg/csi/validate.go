package csi

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/store"
)

// StorageClass parameters, and their defaults.
const (
	ParamReplicas          = "replicas"
	ParamMinInSyncReplicas = "minInSyncReplicas"
	ParamTopologyKey       = "topologyKey"
	ParamFSType            = "fsType"

	DefaultReplicas = 3
	MaxReplicas     = 5
	DefaultFSType   = "ext4"

	// reservedParamPrefix marks the parameters the external-provisioner
	// adds (PVC name and namespace, secrets); they are not Trireme's.
	reservedParamPrefix = "csi.storage.k8s.io/"
)

// Volume sizes.
const (
	// DefaultVolumeSize is the size of a volume whose request gives no
	// capacity (the CSI spec leaves it to the plugin): 1 GiB.
	DefaultVolumeSize = 1 << 30
	// MinVolumeSize is the smallest volume, and sizes are rounded up to a
	// multiple of it: every block device sector size divides 4 KiB.
	MinVolumeSize = 4096
)

// supportedFSTypes are the filesystems the node service formats.
var supportedFSTypes = []string{"ext4", "xfs"}

// volumeParams are the validated StorageClass parameters of a volume.
type volumeParams struct {
	replicas    int
	minInSync   int
	topologyKey string
	fsType      string
	// stored are the parameters to keep in the record: the request's,
	// without the provisioner's reserved keys.
	stored map[string]string
}

// parseParameters validates StorageClass parameters; each wrong one is
// INVALID_ARGUMENT naming it, and so is any unknown one.
func parseParameters(in map[string]string) (volumeParams, error) {
	p := volumeParams{replicas: DefaultReplicas, topologyKey: api.ZoneTopologyKey, fsType: DefaultFSType,
		stored: map[string]string{}}
	for k, v := range in {
		if strings.HasPrefix(k, reservedParamPrefix) {
			continue
		}
		p.stored[k] = v
	}
	if err := p.parse(); err != nil {
		return volumeParams{}, err
	}
	return p, nil
}

func (p *volumeParams) parse() error {
	var err error
	for _, k := range slices.Sorted(maps.Keys(p.stored)) {
		v := p.stored[k]
		switch k {
		case ParamReplicas:
			p.replicas, err = intParam(k, v, 1, MaxReplicas)
		case ParamTopologyKey:
			p.topologyKey, err = nonEmptyParam(k, v)
		case ParamFSType:
			p.fsType, err = fsTypeParam(k, v)
		case ParamMinInSyncReplicas:
			continue // checked against replicas below
		default:
			err = invalidParam(k, "unknown parameter")
		}
		if err != nil {
			return err
		}
	}
	p.minInSync = min(2, p.replicas)
	if v, ok := p.stored[ParamMinInSyncReplicas]; ok {
		p.minInSync, err = intParam(ParamMinInSyncReplicas, v, 1, p.replicas)
	}
	return err
}

func intParam(name, v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, invalidParam(name, fmt.Sprintf("%q is not an integer from %d to %d", v, lo, hi))
	}
	return n, nil
}

func nonEmptyParam(name, v string) (string, error) {
	if v == "" {
		return "", invalidParam(name, "must not be empty")
	}
	return v, nil
}

func fsTypeParam(name, v string) (string, error) {
	if !slices.Contains(supportedFSTypes, v) {
		return "", invalidParam(name, fmt.Sprintf("%q is not one of %s", v, strings.Join(supportedFSTypes, ", ")))
	}
	return v, nil
}

func invalidParam(name, why string) error {
	return status.Errorf(codes.InvalidArgument, "parameter %q: %s", name, why)
}

// volumeSize chooses the size of a new volume from its capacity range: the
// required bytes rounded up to MinVolumeSize, or DefaultVolumeSize (capped
// by the limit) when none is required. A range that contradicts itself is
// INVALID_ARGUMENT; one no size can satisfy is OUT_OF_RANGE.
func volumeSize(r *csipb.CapacityRange) (int64, error) {
	req, limit := r.GetRequiredBytes(), r.GetLimitBytes()
	switch {
	case req < 0 || limit < 0:
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: negative bytes (required %d, limit %d)", req, limit)
	case limit > 0 && req > limit:
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range: required_bytes %d exceeds limit_bytes %d", req, limit)
	case req == 0 && limit == 0:
		return DefaultVolumeSize, nil
	case req == 0:
		return sizeUnderLimit(limit)
	case req > math.MaxInt64-MinVolumeSize:
		return 0, status.Errorf(codes.OutOfRange, "capacity_range: required_bytes %d is too large", req)
	}
	size := (req + MinVolumeSize - 1) / MinVolumeSize * MinVolumeSize
	if limit > 0 && size > limit {
		return 0, status.Errorf(codes.OutOfRange, "capacity_range: %d bytes rounded up to a multiple of %d exceed limit_bytes %d", req, MinVolumeSize, limit)
	}
	return size, nil
}

func sizeUnderLimit(limit int64) (int64, error) {
	if limit < MinVolumeSize {
		return 0, status.Errorf(codes.OutOfRange, "capacity_range: limit_bytes %d is below the minimum volume size %d", limit, MinVolumeSize)
	}
	return min(DefaultVolumeSize, limit/MinVolumeSize*MinVolumeSize), nil
}

// Access modes. All supported ones are single-node: ControllerPublish
// attaches a volume to one node at a time and fences the previous one
// with the attachment generation. MULTI_NODE_* modes are refused for
// block volumes as well as for filesystems: nothing in the data plane
// coordinates writers on several nodes yet.
var supportedModes = []csipb.VolumeCapability_AccessMode_Mode{
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
}

// validateCapabilities checks that caps are given and each is supported;
// it returns their canonical descriptions, for the fingerprint.
func validateCapabilities(caps []*csipb.VolumeCapability) ([]string, error) {
	if len(caps) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities: required")
	}
	out := make([]string, 0, len(caps))
	for i, c := range caps {
		desc, err := capability(c)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume_capabilities[%d]: %v", i, err)
		}
		out = append(out, desc)
	}
	return out, nil
}

// capability describes one capability, or says why it is not supported.
func capability(c *csipb.VolumeCapability) (string, error) {
	mode := c.GetAccessMode().GetMode()
	if c.GetAccessMode() == nil || mode == csipb.VolumeCapability_AccessMode_UNKNOWN {
		return "", fmt.Errorf("access_mode: required")
	}
	if !slices.Contains(supportedModes, mode) {
		return "", fmt.Errorf("access_mode %v is not supported: volumes attach to one node at a time", mode)
	}
	switch {
	case c.GetBlock() != nil:
		return "block/" + mode.String(), nil
	case c.GetMount() != nil:
		fs := c.GetMount().GetFsType()
		if fs != "" && !slices.Contains(supportedFSTypes, fs) {
			return "", fmt.Errorf("mount.fs_type %q is not one of %s", fs, strings.Join(supportedFSTypes, ", "))
		}
		return "mount/" + fs + "/" + mode.String(), nil
	}
	return "", fmt.Errorf("access_type: block or mount required")
}

// validateName checks a CreateVolume name: 1 to 128 bytes, any characters
// (the store needs valid UTF-8, which protobuf strings are).
func validateName(name string) error {
	if name == "" {
		return status.Error(codes.InvalidArgument, "name: required")
	}
	if len(name) > store.MaxNameLen {
		return status.Errorf(codes.InvalidArgument, "name: %d bytes, at most %d allowed", len(name), store.MaxNameLen)
	}
	return nil
}

// validateVolumeID refuses a request that names no volume. An id this
// driver could not have made is left to the handler: it names no volume,
// which is NOT_FOUND or OK depending on the call.
func validateVolumeID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "volume_id: required")
	}
	return nil
}

func validateNodeID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "node_id: required")
	}
	return nil
}

// wellFormedID says whether id could be a volume id this driver made.
func wellFormedID(id string) bool {
	return strings.HasPrefix(id, store.VolumeIDPrefix) && api.ValidateVolumeID(id) == nil
}

// parseStartingToken checks a ListVolumes token: empty, or the id of the
// last volume of the previous page. Anything else is ABORTED, as the spec
// asks.
func parseStartingToken(tok string) (string, error) {
	if tok != "" && !wellFormedID(tok) {
		return "", status.Errorf(codes.Aborted, "starting_token %q is not a token this driver returned", tok)
	}
	return tok, nil
}

func validateMaxEntries(n int32) error {
	if n < 0 {
		return status.Errorf(codes.InvalidArgument, "max_entries: %d is negative", n)
	}
	return nil
}

// validateCreateVolume checks a CreateVolume request and turns it into
// what the controller needs. Every problem has its exact code.
func validateCreateVolume(req *csipb.CreateVolumeRequest) (controller.VolumeRequest, volumeParams, error) {
	if err := validateName(req.GetName()); err != nil {
		return controller.VolumeRequest{}, volumeParams{}, err
	}
	caps, err := validateCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return controller.VolumeRequest{}, volumeParams{}, err
	}
	if req.GetVolumeContentSource() != nil {
		return controller.VolumeRequest{}, volumeParams{}, status.Error(codes.InvalidArgument,
			"volume_content_source: snapshots and clones are not supported")
	}
	p, err := parseParameters(req.GetParameters())
	if err != nil {
		return controller.VolumeRequest{}, volumeParams{}, err
	}
	if err := checkFSTypeAgrees(req); err != nil {
		return controller.VolumeRequest{}, volumeParams{}, err
	}
	size, err := volumeSize(req.GetCapacityRange())
	if err != nil {
		return controller.VolumeRequest{}, volumeParams{}, err
	}
	return controller.VolumeRequest{
		Name: req.GetName(), Size: size,
		RequiredBytes: req.GetCapacityRange().GetRequiredBytes(), LimitBytes: req.GetCapacityRange().GetLimitBytes(),
		Replicas: p.replicas, MinInSyncReplicas: p.minInSync, TopologyKey: p.topologyKey,
		Parameters: p.stored, Capabilities: caps,
		Requisite: topologySegments(req.GetAccessibilityRequirements().GetRequisite()),
		Preferred: topologySegments(req.GetAccessibilityRequirements().GetPreferred()),
	}, p, nil
}

// checkFSTypeAgrees refuses an fsType parameter that names another
// filesystem than a capability's fs_type: one of the two would be ignored.
func checkFSTypeAgrees(req *csipb.CreateVolumeRequest) error {
	param, ok := req.GetParameters()[ParamFSType]
	if !ok {
		return nil
	}
	for i, c := range req.GetVolumeCapabilities() {
		if fs := c.GetMount().GetFsType(); fs != "" && fs != param {
			return status.Errorf(codes.InvalidArgument,
				"parameter %s=%s conflicts with volume_capabilities[%d].mount.fs_type %s", ParamFSType, param, i, fs)
		}
	}
	return nil
}

func topologySegments(ts []*csipb.Topology) []map[string]string {
	out := make([]map[string]string, 0, len(ts))
	for _, t := range ts {
		out = append(out, t.GetSegments())
	}
	return out
}

// validatePublish checks a ControllerPublishVolume request.
func validatePublish(req *csipb.ControllerPublishVolumeRequest) error {
	if err := validateVolumeID(req.GetVolumeId()); err != nil {
		return err
	}
	if err := validateNodeID(req.GetNodeId()); err != nil {
		return err
	}
	if req.GetVolumeCapability() == nil {
		return status.Error(codes.InvalidArgument, "volume_capability: required")
	}
	_, err := validateCapabilities([]*csipb.VolumeCapability{req.GetVolumeCapability()})
	return err
}
