// Package kubetest starts a real Kubernetes control plane for tests: etcd,
// kube-apiserver and, when asked, kube-controller-manager, each a process
// built by hack/build-tools.sh, on 127.0.0.1 ports free at start. It also
// starts the CSI sidecars against a driver's unix socket.
//
// Everything a test starts is killed (SIGKILL) and its files removed when
// the test ends, failed or not; a failed test prints the tail of each
// process's log first.
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// readyTimeout bounds how long etcd and kube-apiserver may take to serve.
// The apiserver needs several seconds on a busy two-core machine.
const readyTimeout = 2 * time.Minute

// ServiceClusterIPRange is the range Service cluster IPs come from.
const ServiceClusterIPRange = "10.0.0.0/24"

// Options choose what Start runs besides etcd and kube-apiserver.
type Options struct {
	// ControllerManager starts kube-controller-manager with the
	// controllers that bind and attach volumes: Controllers, or
	// DefaultControllers when that is empty.
	ControllerManager bool
	// Controllers names the kube-controller-manager controllers to run.
	Controllers []string
	// APIServerArgs are added to kube-apiserver's command line.
	APIServerArgs []string
}

// DefaultControllers are the controllers that take a PVC from created to
// bound, attached, detached and deleted: the PV binder, attach/detach, the
// PVC and PV protection finalizers, and the service account controller that
// makes the default account pods run as.
var DefaultControllers = []string{
	"persistentvolume-binder-controller", "persistentvolume-attach-detach-controller",
	"persistentvolumeclaim-protection-controller", "persistentvolume-protection-controller",
	"serviceaccount-controller",
}

// ControlPlane is a running etcd and kube-apiserver, and optionally
// kube-controller-manager.
type ControlPlane struct {
	// Dir holds the data, certificates, kubeconfig and logs.
	Dir string
	// URL is the apiserver's https address.
	URL string
	// Token is the bearer token of the admin user (group system:masters).
	Token string
	// CAFile verifies the apiserver's serving certificate.
	CAFile string

	Etcd              *Process
	APIServer         *Process
	ControllerManager *Process // nil unless Options.ControllerManager

	kubeconfig string
	caData     []byte
}

// Start starts the control plane and waits until the apiserver is ready.
// It skips t, or fails it under CI, when a tool is not built.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	etcdBin, apiBin := Tool(t, Etcd), Tool(t, KubeAPIServer)
	kcmBin := ""
	if opts.ControllerManager {
		kcmBin = Tool(t, KubeControllerManager)
	}
	cp := &ControlPlane{Dir: t.TempDir(), Token: randomToken(t)}
	etcdURL := cp.startEtcd(t, etcdBin)
	cp.startAPIServer(t, apiBin, etcdURL, opts.APIServerArgs)
	cp.waitReady(t)
	cp.writeKubeconfig(t)
	if opts.ControllerManager {
		controllers := opts.Controllers
		if len(controllers) == 0 {
			controllers = DefaultControllers
		}
		cp.startControllerManager(t, kcmBin, controllers)
	}
	return cp
}

// RESTConfig returns a client configuration for the admin user.
func (cp *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            cp.URL,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.caData},
		QPS:             100,
		Burst:           200,
	}
}

// Kubeconfig returns the path of a kubeconfig file for the admin user, for
// the processes a test starts.
func (cp *ControlPlane) Kubeconfig() string { return cp.kubeconfig }

func (cp *ControlPlane) startEtcd(t testing.TB, bin string) string {
	client, peer := hostPort(FreePort(t, "127.0.0.1")), hostPort(FreePort(t, "127.0.0.1"))
	clientURL, peerURL := "http://"+client, "http://"+peer
	cp.Etcd = StartProcess(t, "etcd", bin,
		"--name=test", "--data-dir="+filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=test="+peerURL,
		// A test's data need not survive a power cut.
		"--unsafe-no-fsync", "--log-level=warn")
	return clientURL
}

func (cp *ControlPlane) startAPIServer(t testing.TB, bin, etcdURL string, extra []string) {
	port := FreePort(t, "127.0.0.1")
	cp.URL = "https://" + hostPort(port)
	certDir := filepath.Join(cp.Dir, "apiserver")
	cp.CAFile = filepath.Join(certDir, "apiserver.crt")
	saKey := writeServiceAccountKey(t, cp.Dir)
	tokens := filepath.Join(cp.Dir, "tokens.csv")
	writeFile(t, tokens, cp.Token+",admin,admin,system:masters\n")
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port), "--cert-dir=" + certDir,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		// No Service endpoints for the apiserver itself: 127.0.0.1 is
		// not a valid endpoint address.
		"--endpoint-reconciler-type=none",
		"--shutdown-delay-duration=0s",
	}
	cp.APIServer = StartProcess(t, "kube-apiserver", bin, append(args, extra...)...)
}

// waitReady waits until the apiserver writes its certificate and then
// answers /readyz with 200.
func (cp *ControlPlane) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	var last string
	for {
		if last = cp.probe(ctx); last == "" {
			return
		}
		select {
		case <-cp.Etcd.Exited():
			t.Fatal(cp.Etcd.ExitError())
		case <-cp.APIServer.Exited():
			t.Fatal(cp.APIServer.ExitError())
		case <-ctx.Done():
			t.Fatalf("kube-apiserver not ready after %s: %s", readyTimeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// probe returns "" when the apiserver is ready, or why it is not.
func (cp *ControlPlane) probe(ctx context.Context) string {
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		return "no serving certificate yet"
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return "serving certificate not complete"
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.URL+"/readyz", nil)
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+cp.Token)
	resp, err := client.Do(req)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "readyz: " + resp.Status
	}
	cp.caData = ca
	return ""
}

func (cp *ControlPlane) writeKubeconfig(t testing.TB) {
	cp.kubeconfig = filepath.Join(cp.Dir, "kubeconfig")
	writeFile(t, cp.kubeconfig, fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: admin
current-context: test
`, cp.URL, cp.CAFile, cp.Token))
}

func (cp *ControlPlane) startControllerManager(t testing.TB, bin string, controllers []string) {
	args := []string{
		"--kubeconfig=" + cp.kubeconfig,
		"--controllers=" + strings.Join(controllers, ","),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		// No serving: nothing probes it.
		"--secure-port=0",
		// Resync often: a test should not wait out the 15s default.
		"--pvclaimbinder-sync-period=1s",
	}
	cp.ControllerManager = StartProcess(t, "kube-controller-manager", bin, args...)
}

// writeServiceAccountKey writes a fresh RSA key that signs and verifies
// service account tokens, and returns its path.
func writeServiceAccountKey(t testing.TB, dir string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("service account key: %v", err)
	}
	path := filepath.Join(dir, "sa.key")
	writeFile(t, path, string(pem.EncodeToMemory(&pem.Block{
		Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})))
	return path
}

func randomToken(t testing.TB) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
