package csi

import (
	"reflect"
	"strings"
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestParseParameters(t *testing.T) {
	tests := []struct {
		name     string
		params   map[string]string
		want     volumeParams // stored is not compared
		wantCode codes.Code
		wantText string
	}{
		{"defaults", nil, volumeParams{3, 2, "topology.kubernetes.io/zone", "ext4", nil}, codes.OK, ""},
		{"one replica", map[string]string{"replicas": "1"}, volumeParams{1, 1, "topology.kubernetes.io/zone", "ext4", nil}, codes.OK, ""},
		{"five replicas, three in sync", map[string]string{"replicas": "5", "minInSyncReplicas": "3"}, volumeParams{5, 3, "topology.kubernetes.io/zone", "ext4", nil}, codes.OK, ""},
		{"xfs and a rack key", map[string]string{"fsType": "xfs", "topologyKey": "example.com/rack"}, volumeParams{3, 2, "example.com/rack", "xfs", nil}, codes.OK, ""},
		{"provisioner keys ignored", map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/fstype": "btrfs"}, volumeParams{3, 2, "topology.kubernetes.io/zone", "ext4", nil}, codes.OK, ""},
		{"zero replicas", map[string]string{"replicas": "0"}, volumeParams{}, codes.InvalidArgument, `parameter "replicas"`},
		{"six replicas", map[string]string{"replicas": "6"}, volumeParams{}, codes.InvalidArgument, `parameter "replicas"`},
		{"replicas not a number", map[string]string{"replicas": "three"}, volumeParams{}, codes.InvalidArgument, `parameter "replicas"`},
		{"minInSync zero", map[string]string{"minInSyncReplicas": "0"}, volumeParams{}, codes.InvalidArgument, `parameter "minInSyncReplicas"`},
		{"minInSync above replicas", map[string]string{"replicas": "2", "minInSyncReplicas": "3"}, volumeParams{}, codes.InvalidArgument, `parameter "minInSyncReplicas"`},
		{"empty topologyKey", map[string]string{"topologyKey": ""}, volumeParams{}, codes.InvalidArgument, `parameter "topologyKey"`},
		{"fsType btrfs", map[string]string{"fsType": "btrfs"}, volumeParams{}, codes.InvalidArgument, `parameter "fsType"`},
		{"unknown parameter", map[string]string{"replica": "3"}, volumeParams{}, codes.InvalidArgument, `parameter "replica"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseParameters(tc.params)
			if status.Code(err) != tc.wantCode || !strings.Contains(status.Convert(err).Message(), tc.wantText) {
				t.Fatalf("parseParameters: %v, want %v naming %s", err, tc.wantCode, tc.wantText)
			}
			got.stored = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("parseParameters = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestVolumeSize(t *testing.T) {
	tests := []struct {
		name     string
		r        *csipb.CapacityRange
		want     int64
		wantCode codes.Code
	}{
		{"no range: default", nil, 1 << 30, codes.OK},
		{"zero range: default", &csipb.CapacityRange{}, 1 << 30, codes.OK},
		{"required rounded up", &csipb.CapacityRange{RequiredBytes: 5000}, 8192, codes.OK},
		{"exact multiple", &csipb.CapacityRange{RequiredBytes: 1 << 20}, 1 << 20, codes.OK},
		{"limit only, below default", &csipb.CapacityRange{LimitBytes: 10000}, 8192, codes.OK},
		{"limit only, above default", &csipb.CapacityRange{LimitBytes: 2 << 30}, 1 << 30, codes.OK},
		{"required equals limit", &csipb.CapacityRange{RequiredBytes: 8192, LimitBytes: 8192}, 8192, codes.OK},
		{"required above limit", &csipb.CapacityRange{RequiredBytes: 8193, LimitBytes: 8192}, 0, codes.InvalidArgument},
		{"negative required", &csipb.CapacityRange{RequiredBytes: -1}, 0, codes.InvalidArgument},
		{"negative limit", &csipb.CapacityRange{LimitBytes: -1}, 0, codes.InvalidArgument},
		{"limit below minimum", &csipb.CapacityRange{LimitBytes: 4095}, 0, codes.OutOfRange},
		{"rounding passes limit", &csipb.CapacityRange{RequiredBytes: 5000, LimitBytes: 6000}, 0, codes.OutOfRange},
		{"too large to round", &csipb.CapacityRange{RequiredBytes: 1<<63 - 1}, 0, codes.OutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := volumeSize(tc.r)
			if status.Code(err) != tc.wantCode || got != tc.want {
				t.Errorf("volumeSize = %d, %v; want %d, %v", got, err, tc.want, tc.wantCode)
			}
		})
	}
}

func ctrlMountCap(fs string, mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{FsType: fs}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

func ctrlBlockCap(mode csipb.VolumeCapability_AccessMode_Mode) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: mode},
	}
}

func TestValidateCapabilities(t *testing.T) {
	const (
		snw  = csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		snsw = csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		snmw = csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER
		snro = csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
		mnro = csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		mnsw = csipb.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER
		mnmw = csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	)
	tests := []struct {
		name     string
		caps     []*csipb.VolumeCapability
		want     []string
		wantCode codes.Code
	}{
		{"mount ext4 single writer", []*csipb.VolumeCapability{ctrlMountCap("ext4", snw)}, []string{"mount/ext4/SINGLE_NODE_WRITER"}, codes.OK},
		{"mount default fs", []*csipb.VolumeCapability{ctrlMountCap("", snsw)}, []string{"mount//SINGLE_NODE_SINGLE_WRITER"}, codes.OK},
		{"mount xfs multi writer", []*csipb.VolumeCapability{ctrlMountCap("xfs", snmw)}, []string{"mount/xfs/SINGLE_NODE_MULTI_WRITER"}, codes.OK},
		{"block reader", []*csipb.VolumeCapability{ctrlBlockCap(snro)}, []string{"block/SINGLE_NODE_READER_ONLY"}, codes.OK},
		{"none", nil, nil, codes.InvalidArgument},
		{"no access type", []*csipb.VolumeCapability{{AccessMode: &csipb.VolumeCapability_AccessMode{Mode: snw}}}, nil, codes.InvalidArgument},
		{"no access mode", []*csipb.VolumeCapability{{AccessType: &csipb.VolumeCapability_Block{Block: &csipb.VolumeCapability_BlockVolume{}}}}, nil, codes.InvalidArgument},
		{"unknown mode", []*csipb.VolumeCapability{ctrlBlockCap(csipb.VolumeCapability_AccessMode_UNKNOWN)}, nil, codes.InvalidArgument},
		{"mount multi-node reader", []*csipb.VolumeCapability{ctrlMountCap("ext4", mnro)}, nil, codes.InvalidArgument},
		{"mount multi-node single writer", []*csipb.VolumeCapability{ctrlMountCap("ext4", mnsw)}, nil, codes.InvalidArgument},
		{"mount multi-node multi writer", []*csipb.VolumeCapability{ctrlMountCap("ext4", mnmw)}, nil, codes.InvalidArgument},
		{"block multi-node multi writer", []*csipb.VolumeCapability{ctrlBlockCap(mnmw)}, nil, codes.InvalidArgument},
		{"fs btrfs", []*csipb.VolumeCapability{ctrlMountCap("btrfs", snw)}, nil, codes.InvalidArgument},
		{"second one bad", []*csipb.VolumeCapability{ctrlMountCap("ext4", snw), ctrlBlockCap(mnro)}, nil, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := validateCapabilities(tc.caps)
			if status.Code(err) != tc.wantCode || strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("validateCapabilities = %v, %v; want %v, %v", got, err, tc.want, tc.wantCode)
			}
		})
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		endpoint, network, address string
		ok                         bool
	}{
		{"unix:///csi/csi.sock", "unix", "/csi/csi.sock", true},
		{"unix://csi.sock", "unix", "csi.sock", true},
		{"tcp://127.0.0.1:10000", "tcp", "127.0.0.1:10000", true},
		{"unix://", "", "", false},
		{"tcp://127.0.0.1", "", "", false},
		{"http://127.0.0.1:80", "", "", false},
		{"/csi/csi.sock", "", "", false},
	}
	for _, tc := range tests {
		network, address, err := ParseEndpoint(tc.endpoint)
		if network != tc.network || address != tc.address || (err == nil) != tc.ok {
			t.Errorf("ParseEndpoint(%q) = %q, %q, %v", tc.endpoint, network, address, err)
		}
	}
}
