package csi

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"github.com/trireme-csi/trireme/pkg/controller/controllertest"
)

// ctrlSanityNode is the least Node service csi-sanity's Controller tests
// need: it names a registered node.
type ctrlSanityNode struct {
	csipb.UnimplementedNodeServer
}

func (ctrlSanityNode) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	return &csipb.NodeGetInfoResponse{NodeId: "a1"}, nil
}

func (ctrlSanityNode) NodeUnpublishVolume(context.Context, *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}

func (ctrlSanityNode) NodeUnstageVolume(context.Context, *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func (ctrlSanityNode) NodeGetCapabilities(context.Context, *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	return &csipb.NodeGetCapabilitiesResponse{}, nil
}

// TestControllerSanity runs csi-sanity's Identity and Controller tests
// against the Controller service over fake nodes, from
// sanity.NewTestConfig() with the default IdempotentCount. The tests it
// skips are those of capabilities Trireme does not advertise: snapshots,
// cloning, expansion, volume modification, read-only publish and the
// group controller. The Node service has its own sanity run.
func TestControllerSanity(t *testing.T) {
	e := controllertest.NewSized(t, controllertest.SixNodes, 1<<50)
	sock := filepath.Join(t.TempDir(), "csi.sock")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	s := NewGRPCServer()
	csipb.RegisterIdentityServer(s, &IdentityServer{Version: "test", Controller: true})
	csipb.RegisterControllerServer(s, NewControllerServer(e.C))
	csipb.RegisterNodeServer(s, ctrlSanityNode{})
	go s.Serve(ctrlSlowAccept{l})
	defer s.Stop()

	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + sock
	cfg.TargetPath = filepath.Join(t.TempDir(), "target")
	cfg.StagingPath = filepath.Join(t.TempDir(), "staging")
	sc := sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	suite.FocusStrings = append(suite.FocusStrings, "Controller Service", "Identity Service")
	ginkgo.RunSpecs(t, "Trireme CSI Controller sanity", suite, reporter)
	sc.Finalize()
}

// ctrlSlowAccept delays each accepted connection. csi-sanity's Connect
// reads the connection state once after dialing and then waits for it to
// change: a connection already Ready at that first read never changes, and
// the suite fails after a minute. The delay keeps the handshake after it.
type ctrlSlowAccept struct{ net.Listener }

func (l ctrlSlowAccept) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	time.Sleep(50 * time.Millisecond)
	return c, err
}
