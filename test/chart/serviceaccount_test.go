package chart

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/trireme-csi/trireme/internal/chartargs"
	"github.com/trireme-csi/trireme/internal/kubetest"
	"github.com/trireme-csi/trireme/internal/testenv"
)

// TestBinariesRunUnderTheChartsServiceAccounts installs the chart, then
// runs trireme controller and trireme node with the chart's args, each
// authenticated as its pod's ServiceAccount: the controller must take the
// Lease and keep the node's record, the node must read its zone from its
// Node and find the controller through the Lease. Whatever RBAC refuses
// shows up as a missing record and in the processes' logs.
func TestBinariesRunUnderTheChartsServiceAccounts(t *testing.T) {
	skipUnderRace(t)
	testenv.Require(t, "root")
	bin := triremeBinary(t)
	c := startCluster(t)
	helm(t, "install", "trireme", chartDir, "--namespace", namespace, "--create-namespace",
		"--kubeconfig="+c.kubeconfig, "--timeout=2m")
	const nodeName, zone = "node-1", "zone-b"
	c.createNode(t, nodeName, zone)

	chart, err := chartargs.Parse(helm(t, templateArgs(nil)...))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pod := chartargs.Pod{Name: "p", Namespace: namespace, IP: "127.0.0.1", NodeName: nodeName, HostIP: "127.0.0.1"}
	apiPort := strconv.Itoa(kubetest.FreePort(t, "127.0.0.1"))

	// The pods' init containers issue their certificates from the CA
	// Secret the chart generated.
	caDir, ctlTLS, nodeTLS := filepath.Join(dir, "ca"), filepath.Join(dir, "controller-tls"), filepath.Join(dir, "node-tls")
	c.writeSecret(t, "trireme-ca", caDir)
	if err := chartargs.RunInit(bin, chart.ControllerInit, pod, caDir, ctlTLS); err != nil {
		t.Fatal(err)
	}
	if err := chartargs.RunInit(bin, chart.NodeInit, pod, caDir, nodeTLS); err != nil {
		t.Fatal(err)
	}

	args := resolve(t, chart.Controller, pod)
	args = chartargs.SetFlag(args, "tls-dir", ctlTLS)
	args = chartargs.SetFlag(args, "endpoint", "unix://"+filepath.Join(dir, "controller.sock"))
	args = chartargs.SetFlag(args, "api-port", apiPort)
	args = chartargs.SetFlag(args, "kubeconfig", c.serviceAccountKubeconfig(t, "trireme-controller"))
	ctl := kubetest.StartProcess(t, "controller", bin, args...)

	args = resolve(t, chart.Node, pod)
	args = chartargs.SetFlag(args, "tls-dir", nodeTLS)
	args = chartargs.SetFlag(args, "data-dir", filepath.Join(dir, "node"))
	args = chartargs.SetFlag(args, "csi-endpoint", "unix://"+filepath.Join(dir, "node.sock"))
	for _, port := range []string{"replication-port", "nbd-port", "api-port"} {
		args = chartargs.SetFlag(args, port, strconv.Itoa(kubetest.FreePort(t, "127.0.0.1")))
	}
	args = chartargs.SetFlag(args, "kubeconfig", c.serviceAccountKubeconfig(t, "trireme-node"))
	node := kubetest.StartProcess(t, "node", bin, args...)

	lease := object{schema.GroupVersionKind{Group: "coordination.k8s.io", Version: "v1", Kind: "Lease"}, namespace, controllerLease}
	holder := waitFor(t, "the controller to take the Lease", func() (string, bool) {
		l := c.get(t, lease)
		h, _ := nested(l, "spec", "holderIdentity").(string)
		return h, h != ""
	})
	if want := "127.0.0.1:" + apiPort + "/"; !strings.HasPrefix(holder, want) {
		t.Errorf("Lease holder %q, want the pod IP and API port %q", holder, want)
	}

	record := object{schema.GroupVersionKind{Group: "trireme.dev", Version: "v1alpha1", Kind: "TriremeNode"}, "", nodeName}
	gotZone := waitFor(t, "the node to register through the leader", func() (string, bool) {
		z, _ := nested(c.get(t, record), "spec", "zone").(string)
		return z, z != ""
	})
	if gotZone != zone {
		t.Errorf("TriremeNode %s zone %q, want %q from its Node's label", nodeName, gotZone, zone)
	}
	for _, p := range []*kubetest.Process{ctl, node} {
		if log := p.Tail(200); strings.Contains(log, "forbidden") {
			t.Errorf("a request was forbidden:\n%s", log)
		}
	}
}

// writeSecret writes each key of a Secret of the release's namespace to a
// file in dir, as the kubelet mounts a Secret volume.
func (c *cluster) writeSecret(t *testing.T, name, dir string) {
	t.Helper()
	sec, err := c.client.CoreV1().Secrets(namespace).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for k, v := range sec.Data {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o400); err != nil {
			t.Fatal(err)
		}
	}
}

func resolve(t *testing.T, c chartargs.Container, pod chartargs.Pod) []string {
	t.Helper()
	args, _, err := c.Resolve(pod)
	if err != nil {
		t.Fatal(err)
	}
	return args
}

func (c *cluster) createNode(t *testing.T, name, zone string) {
	t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
	if _, err := c.client.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// ServiceAccount sa of the release's namespace, with a token from the
// TokenRequest API, as a pod's projected token would.
func (c *cluster) serviceAccountKubeconfig(t *testing.T, sa string) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}
	tok, err := c.client.CoreV1().ServiceAccounts(namespace).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, certificate-authority: %q}
users:
- name: %s
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: %s}
current-context: test
`, c.url, c.caFile, sa, tok.Status.Token, sa)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitFor polls f until it reports done, for at most a minute.
func waitFor[T any](t *testing.T, what string, f func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		v, done := f()
		if done {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nested returns the value at path in an unstructured object, or nil.
func nested(obj map[string]any, path ...string) any {
	var v any = obj
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func ptr[T any](v T) *T { return &v }
