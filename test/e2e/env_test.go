package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/trireme-csi/trireme/internal/chartargs"
	"github.com/trireme-csi/trireme/internal/kubetest"
	"github.com/trireme-csi/trireme/internal/testenv"
	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// namespace holds the test's claims, pods and the controllers' Lease.
const namespace = "trireme"

// nodeCapacity is what each storage node offers for replicas.
const nodeCapacity = 4 << 30

// storageNodes are the node agents: one per zone, each on its own
// loopback address. Their zone comes from their Node object's label.
var storageNodes = []localcluster.NodeSpec{
	{ID: "node-a", Zone: "zone-a", IP: "127.0.0.51"},
	{ID: "node-b", Zone: "zone-b", IP: "127.0.0.52"},
	{ID: "node-c", Zone: "zone-c", IP: "127.0.0.53"},
}

// consumerNode runs pods and the driver's node plugin but stores nothing:
// its zone has no storage node. No agent runs for it; the tests never
// stage on it.
var consumerNode = localcluster.NodeSpec{ID: "node-d", Zone: "zone-d"}

// controllerIPs are where the Trireme controller replicas listen.
var controllerIPs = []string{"127.0.0.61", "127.0.0.62"}

// env is the whole system a test runs against.
type env struct {
	t    *testing.T
	cp   *kubetest.ControlPlane
	kube kubernetes.Interface
	dyn  dynamic.Interface
	// dir holds the nodes' data, sockets and the kubelet's paths.
	dir   string
	bin   string
	sys   *localcluster.System
	ctrls []*controller
	// chart holds the trireme containers of charts/trireme: the tests
	// start the controller and the agents with the chart's flags.
	chart chartargs.Chart
	// lease names the Lease the controllers elect their leader with.
	lease string
}

// controller is one Trireme controller replica and the sidecars of its
// pod.
type controller struct {
	name, socket, apiAddr string
	proc                  *kubetest.Container
	sidecars              []*kubetest.Container
}

func startEnv(t *testing.T) *env {
	testenv.Require(t, testenv.Kernel...)
	e := &env{t: t, bin: buildTrireme(t)}
	e.cp = kubetest.Start(t, kubetest.Options{ControllerManager: true})
	cfg := e.cp.RESTConfig()
	e.kube = kubernetes.NewForConfigOrDie(cfg)
	e.dyn = dynamic.NewForConfigOrDie(cfg)
	// Short: unix socket paths must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "trireme-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })

	e.chart = renderChart(t)
	var ok bool
	if e.lease, ok = chartargs.Flag(e.chart.Controller.Args, "leader-election-id"); !ok {
		t.Fatal("the chart's controller has no --leader-election-id")
	}
	// The cluster CA, as the chart's Secret would hold it: the
	// controllers' init containers issue from it, and the node agents'
	// certificates come from it too.
	ca, err := certs.NewCA("Trireme e2e CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteCA(e.caDir(), ca); err != nil {
		t.Fatal(err)
	}
	e.applyCRDs()
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	e.create(&storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: csi.DriverName},
		Spec: storagev1.CSIDriverSpec{AttachRequired: ptr(true), PodInfoOnMount: ptr(false),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}}})
	for _, n := range append(storageNodes, consumerNode) {
		e.registerNode(n)
	}
	for i := range controllerIPs {
		e.startController(i)
	}
	e.startNodes()
	for _, n := range storageNodes {
		e.registerPlugin(n.ID, e.nodeInfo(n.ID))
	}
	// The consumer node's plugin would report what the others do.
	e.registerPlugin(consumerNode.ID, &csipb.NodeGetInfoResponse{NodeId: consumerNode.ID,
		AccessibleTopology: &csipb.Topology{Segments: zoneSegments(consumerNode.Zone)}})
	e.waitNodesRegistered()
	return e
}

func ptr[T any](v T) *T { return &v }

// buildTrireme compiles cmd/trireme for the test.
func buildTrireme(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "trireme")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/trireme-csi/trireme/cmd/trireme").CombinedOutput()
	if err != nil {
		t.Fatalf("build trireme: %v\n%s", err, out)
	}
	return bin
}

func (e *env) ctx() context.Context { return e.t.Context() }

// applyCRDs creates the custom resource definitions of deploy/crds and
// waits until the apiserver serves them.
func (e *env) applyCRDs() {
	root, err := kubetest.RepoRoot()
	if err != nil {
		e.t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	if len(files) == 0 {
		e.t.Fatal("no CRDs in deploy/crds")
	}
	crds := e.dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	for _, f := range files {
		obj := readYAML(e.t, f)
		if _, err := crds.Create(e.ctx(), obj, metav1.CreateOptions{}); err != nil {
			e.t.Fatalf("create CRD from %s: %v", f, err)
		}
		e.eventually(30*time.Second, "CRD "+obj.GetName()+" established", func() (bool, error) {
			got, err := crds.Get(e.ctx(), obj.GetName(), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return hasCondition(got, "Established"), nil
		})
	}
}

func readYAML(t *testing.T, path string) *unstructured.Unstructured {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	obj := &unstructured.Unstructured{}
	if err := utilyaml.NewYAMLOrJSONDecoder(f, 4096).Decode(&obj.Object); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj
}

func hasCondition(obj *unstructured.Unstructured, kind string) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == kind && m["status"] == "True" {
			return true
		}
	}
	return false
}

// registerNode creates the Node object as the kubelet would: zone label,
// and the annotation that hands attach and detach to the controller
// manager.
func (e *env) registerNode(n localcluster.NodeSpec) {
	e.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        n.ID,
		Labels:      map[string]string{api.ZoneTopologyKey: n.Zone, corev1.LabelHostname: n.ID},
		Annotations: map[string]string{"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
	}})
}

// registerPlugin does what the kubelet does when the node-driver-registrar
// announces the driver: label the Node with the plugin's topology and
// record its node id and topology keys in the CSINode object.
func (e *env) registerPlugin(node string, info *csipb.NodeGetInfoResponse) {
	segments := info.GetAccessibleTopology().GetSegments()
	n, err := e.kube.CoreV1().Nodes().Get(e.ctx(), node, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	var keys []string
	for k, v := range segments {
		n.Labels[k] = v
		keys = append(keys, k)
	}
	if _, err := e.kube.CoreV1().Nodes().Update(e.ctx(), n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("label node %s: %v", node, err)
	}
	e.create(&storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: node, OwnerReferences: []metav1.OwnerReference{
			{APIVersion: "v1", Kind: "Node", Name: node, UID: n.UID}}},
		Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{
			{Name: csi.DriverName, NodeID: info.GetNodeId(), TopologyKeys: keys}}},
	})
}

func zoneSegments(zone string) map[string]string {
	return map[string]string{api.ZoneTopologyKey: zone, csi.DriverZoneKey: zone}
}

// startController starts controller replica i with its sidecars, each in
// the same role as in the controller's pod.
func (e *env) startController(i int) *controller {
	ip := controllerIPs[i]
	port := kubetest.FreePort(e.t, ip)
	c := &controller{
		name:    fmt.Sprintf("controller-%d", len(e.ctrls)),
		socket:  filepath.Join(e.dir, fmt.Sprintf("ctrl-%d.sock", len(e.ctrls))),
		apiAddr: fmt.Sprintf("%s:%d", ip, port),
	}
	args, _, err := e.chart.Controller.Resolve(chartargs.Pod{Name: c.name, Namespace: namespace, IP: ip})
	if err != nil {
		e.t.Fatal(err)
	}
	// The pod's init containers issue its certificate, as in the chart.
	tlsDir := filepath.Join(e.dir, c.name+"-tls")
	pod := chartargs.Pod{Name: c.name, Namespace: namespace, IP: ip}
	if err := chartargs.RunInit(e.bin, e.chart.ControllerInit, pod, e.caDir(), tlsDir); err != nil {
		e.t.Fatal(err)
	}
	args = chartargs.SetFlag(args, "tls-dir", tlsDir)
	args = chartargs.SetFlag(args, "endpoint", "unix://"+c.socket)
	args = chartargs.SetFlag(args, "api-port", strconv.Itoa(port))
	args = chartargs.SetFlag(args, "kubeconfig", e.cp.Kubeconfig())
	c.proc = kubetest.StartContainer(e.t, c.name, e.bin, args...)
	for _, s := range []string{kubetest.CSIProvisioner, kubetest.CSIAttacher, kubetest.CSIResizer} {
		c.sidecars = append(c.sidecars, e.cp.StartSidecar(e.t, s, c.socket))
	}
	e.ctrls = append(e.ctrls, c)
	return c
}

// startNodes starts the node agents. They find the leading controller
// through the Lease and their zone through their Node object.
func (e *env) startNodes() {
	args, _, err := e.chart.Node.Resolve(chartargs.Pod{Namespace: namespace})
	if err != nil {
		e.t.Fatal(err)
	}
	// localcluster sets each agent's id, addresses, paths and capacity.
	// ... and their certificates, from the cluster CA.
	kubeArgs := append(withoutFlags(args[1:], "node-id", "data-dir", "listen-address", "replication-port",
		"nbd-port", "api-port", "csi-endpoint", "capacity-bytes", "tls-dir"), "--kubeconfig="+e.cp.Kubeconfig())
	var specs []localcluster.NodeSpec
	for _, n := range storageNodes {
		specs = append(specs, localcluster.NodeSpec{ID: n.ID, IP: n.IP}) // no zone: the Node says
	}
	ctx, cancel := context.WithTimeout(e.ctx(), time.Minute)
	defer cancel()
	cl, err := localcluster.Start(ctx, localcluster.Options{Binary: e.bin, Dir: e.dir, CSI: true,
		CapacityBytes: nodeCapacity, ExtraArgs: kubeArgs, TLSDir: e.caDir()}, specs)
	if err != nil {
		e.t.Fatal(err)
	}
	e.sys = &localcluster.System{Cluster: cl, Dir: e.dir, NodeCapacity: nodeCapacity}
	e.t.Cleanup(func() {
		if err := e.sys.Stop(); err != nil {
			e.t.Errorf("stop node agents: %v", err)
		}
		if e.t.Failed() {
			for _, n := range e.sys.Nodes {
				e.t.Logf("last lines of %s (%s):%s", n.ID, n.LogPath(), tail(n.LogPath(), 40))
				kubetest.KeepLog(e.t, n.LogPath())
			}
		}
	})
}

// caDir holds the cluster CA, where the chart mounts its Secret, and the
// node agents' certificates.
func (e *env) caDir() string { return filepath.Join(e.dir, "tls") }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return "\n" + strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// renderChart renders charts/trireme with leader election terms short
// enough for a takeover to fit in a test.
func renderChart(t *testing.T) chartargs.Chart {
	root, err := kubetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	err = os.WriteFile(values, []byte(`controller:
  leaderElection:
    leaseDuration: 8s
    renewDeadline: 6s
    retryPeriod: 1s
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c, err := chartargs.Render(kubetest.Tool(t, kubetest.Helm), filepath.Join(root, "charts", "trireme"), namespace, values)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// withoutFlags drops the --name=value flags named from args.
func withoutFlags(args []string, names ...string) []string {
	var out []string
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !slices.Contains(names, name) {
			out = append(out, a)
		}
	}
	return out
}

// nodeInfo asks a node agent's CSI Node service who it is, as the
// node-driver-registrar does.
func (e *env) nodeInfo(node string) *csipb.NodeGetInfoResponse {
	var info *csipb.NodeGetInfoResponse
	e.eventually(30*time.Second, "NodeGetInfo on "+node, func() (bool, error) {
		var err error
		info, err = csipb.NewNodeClient(e.sys.Node(node).CSIConn).NodeGetInfo(e.ctx(), &csipb.NodeGetInfoRequest{})
		return err == nil, err
	})
	return info
}

// waitNodesRegistered waits until the leading controller counts every
// storage node: a TriremeNode per node, with its zone from the Node.
func (e *env) waitNodesRegistered() {
	e.eventually(time.Minute, "storage nodes registered in their zones", func() (bool, error) {
		list, err := e.dyn.Resource(nodeResource).List(e.ctx(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		zones := map[string]string{}
		for _, item := range list.Items {
			id, _, _ := unstructured.NestedString(item.Object, "spec", "nodeID")
			zone, _, _ := unstructured.NestedString(item.Object, "spec", "zone")
			zones[id] = zone
		}
		for _, n := range storageNodes {
			if zones[n.ID] != n.Zone {
				return false, fmt.Errorf("nodes and zones registered: %v", zones)
			}
		}
		return true, nil
	})
}

// leader returns the controller replica that holds the Lease, and the
// identity it holds it under.
func (e *env) leader() (*controller, string) {
	return e.leaderOtherThan("")
}

// leaderOtherThan waits until a holder other than identity holds a
// current Lease, and returns it.
func (e *env) leaderOtherThan(identity string) (*controller, string) {
	e.t.Helper()
	var lead *controller
	var holder string
	e.eventually(time.Minute, "a controller leading", func() (bool, error) {
		l, err := e.kube.CoordinationV1().Leases(namespace).Get(e.ctx(), e.lease, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		holder = ptrString(l.Spec.HolderIdentity)
		lead = e.holder(l)
		return lead != nil && holder != identity, fmt.Errorf("holder %q", holder)
	})
	return lead, holder
}

// holder maps the Lease's holder, "<api address>/<identity>", to a
// replica, if the lease is current.
func (e *env) holder(l *coordinationv1.Lease) *controller {
	addr, _, _ := strings.Cut(ptrString(l.Spec.HolderIdentity), "/")
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil ||
		time.Since(l.Spec.RenewTime.Time) > time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second {
		return nil
	}
	for _, c := range e.ctrls {
		if c.apiAddr == addr {
			return c
		}
	}
	return nil
}

func ptrString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// create creates a typed object, failing the test on error.
func (e *env) create(obj any) {
	e.t.Helper()
	var err error
	ctx, opts := e.ctx(), metav1.CreateOptions{}
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = e.kube.CoreV1().Namespaces().Create(ctx, o, opts)
	case *corev1.Node:
		_, err = e.kube.CoreV1().Nodes().Create(ctx, o, opts)
	case *storagev1.CSIDriver:
		_, err = e.kube.StorageV1().CSIDrivers().Create(ctx, o, opts)
	case *storagev1.CSINode:
		_, err = e.kube.StorageV1().CSINodes().Create(ctx, o, opts)
	case *storagev1.StorageClass:
		_, err = e.kube.StorageV1().StorageClasses().Create(ctx, o, opts)
	default:
		e.t.Fatalf("create: unexpected %T", obj)
	}
	if err != nil {
		e.t.Fatalf("create %T: %v", obj, err)
	}
}

// eventually calls cond every 200ms until it returns true, and fails the
// test with cond's last error after timeout.
func (e *env) eventually(timeout time.Duration, what string, cond func() (bool, error)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		select {
		case <-e.ctx().Done():
			e.t.Fatalf("%s: %v", what, e.ctx().Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
