package csisanity

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/grpc"
)

// VolumeSize is the size of the volumes csi-sanity creates: smaller than
// its 10 GiB default, so that formatting over the network stays quick.
const VolumeSize = 1 << 30

// Run runs the whole csi-sanity suite, from sanity.NewTestConfig() with
// its default IdempotentCount, with volumes of the given access type
// ("mount" or "block"). It logs every test that is skipped and why.
func Run(t *testing.T, accessType string) {
	requireKernel(t)
	c := startCluster(t)
	t.Logf("cluster: %s", c)

	cfg := sanity.NewTestConfig()
	cfg.Address = lateDialAddress(c.nodeSocks[0])
	cfg.ControllerAddress = lateDialAddress(c.controllerSock)
	cfg.DialOptions = append(cfg.DialOptions, lateDialer)
	cfg.ControllerDialOptions = append(cfg.ControllerDialOptions, lateDialer)
	cfg.TargetPath = filepath.Join(c.dir, "target")
	cfg.StagingPath = filepath.Join(c.dir, "staging")
	cfg.TestVolumeAccessType = accessType
	cfg.TestVolumeSize = VolumeSize
	if r := os.Getenv("TRIREME_SANITY_REPLICAS"); r != "" {
		cfg.TestVolumeParameters = map[string]string{"replicas": r}
	}
	sc := sanity.GinkgoTest(&cfg)
	defer sc.Finalize()

	ginkgo.ReportAfterSuite("summary", func(r ginkgo.Report) { logReport(t, r) })
	gomega.RegisterFailHandler(ginkgo.Fail)
	suite, reporter := ginkgo.GinkgoConfiguration()
	ginkgo.RunSpecs(t, "Trireme csi-sanity, "+accessType+" volumes", suite, reporter)
}

// lateDialAddress and lateDialer work around a race in csi-test's
// utils.Connect: it waits for the connection's state to change from the
// one it first reads, so it hangs for a minute, and fails, when the
// connection is already ready by then. Dialing the socket a little late
// makes sure it first reads CONNECTING. The passthrough scheme keeps
// utils.Connect from replacing the dialer, as it does for unix://.
func lateDialAddress(sock string) string { return "passthrough:///unix://" + sock }

var lateDialer = grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
	time.Sleep(50 * time.Millisecond)
	var d net.Dialer
	return d.DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
})

// logReport logs the counts and every skipped test with its reason.
func logReport(t *testing.T, r ginkgo.Report) {
	counts := map[types.SpecState]int{}
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt {
			continue
		}
		counts[s.State]++
		if s.State == types.SpecStateSkipped || s.State == types.SpecStatePending {
			t.Logf("skipped: %s: %s", s.FullText(), s.Failure.Message)
		}
	}
	t.Logf("csi-sanity: %d passed, %d failed, %d skipped", counts[types.SpecStatePassed],
		counts[types.SpecStateFailed]+counts[types.SpecStatePanicked]+counts[types.SpecStateTimedout],
		counts[types.SpecStateSkipped]+counts[types.SpecStatePending])
}
