package csi

import (
	"testing"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
	"github.com/trireme-csi/trireme/pkg/store"
)

func TestControllerExpandVolume(t *testing.T) {
	s, e := newCtrlServer(t, controllertest.SixNodes)
	v := ctrlMustCreate(t, s, "pvc-1")
	id := v.GetVolumeId()
	expand := func(vol string, r *csipb.CapacityRange, vc *csipb.VolumeCapability) (*csipb.ControllerExpandVolumeResponse, error) {
		return s.ControllerExpandVolume(ctrlCtx, &csipb.ControllerExpandVolumeRequest{VolumeId: vol, CapacityRange: r, VolumeCapability: vc})
	}
	const gib = 1 << 30
	tests := []struct {
		name string
		vol  string
		r    *csipb.CapacityRange
		vc   *csipb.VolumeCapability
		want codes.Code
		size int64
	}{
		{"grow, rounded up to 4096", id, &csipb.CapacityRange{RequiredBytes: 2*gib - 100}, nil, codes.OK, 2 * gib},
		{"repeat", id, &csipb.CapacityRange{RequiredBytes: 2 * gib}, ctrlMountCap("ext4", ctrlSNW), codes.OK, 2 * gib},
		{"smaller: stays as it is", id, &csipb.CapacityRange{RequiredBytes: gib}, nil, codes.OK, 2 * gib},
		{"no volume id", "", &csipb.CapacityRange{RequiredBytes: 3 * gib}, nil, codes.InvalidArgument, 0},
		{"no capacity range", id, nil, nil, codes.InvalidArgument, 0},
		{"no required bytes", id, &csipb.CapacityRange{LimitBytes: 3 * gib}, nil, codes.InvalidArgument, 0},
		{"limit below required", id, &csipb.CapacityRange{RequiredBytes: 3 * gib, LimitBytes: gib}, nil, codes.InvalidArgument, 0},
		{"limit below the current size", id, &csipb.CapacityRange{RequiredBytes: gib, LimitBytes: gib}, nil, codes.OutOfRange, 0},
		{"multi-node capability", id, &csipb.CapacityRange{RequiredBytes: 3 * gib},
			ctrlBlockCap(csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), codes.InvalidArgument, 0},
		{"unknown volume", store.NewVolumeID(), &csipb.CapacityRange{RequiredBytes: 3 * gib}, nil, codes.NotFound, 0},
		{"malformed volume id", "no such volume", &csipb.CapacityRange{RequiredBytes: 3 * gib}, nil, codes.NotFound, 0},
		{"more than the nodes hold", id, &csipb.CapacityRange{RequiredBytes: 100 * gib}, nil, codes.ResourceExhausted, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := expand(tc.vol, tc.r, tc.vc)
			if status.Code(err) != tc.want {
				t.Fatalf("ControllerExpandVolume: %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			if resp.GetCapacityBytes() != tc.size || !resp.GetNodeExpansionRequired() {
				t.Errorf("response %v, want %d bytes and node expansion", resp, tc.size)
			}
		})
	}
	got, err := e.C.GetVolume(ctrlCtx, id)
	if err != nil || got.Size != 2*gib {
		t.Errorf("record size %d, %v; want %d", got.Size, err, 2*gib)
	}
}
