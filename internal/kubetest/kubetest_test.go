package kubetest

import (
	"context"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestControlPlaneServesNamespaces(t *testing.T) {
	cp := Start(t, Options{})
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubetest"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	got, err := client.CoreV1().Namespaces().Get(ctx, "kubetest", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get namespace: %v", err)
	}
	if got.Status.Phase != corev1.NamespaceActive {
		t.Fatalf("namespace phase = %q, want %q", got.Status.Phase, corev1.NamespaceActive)
	}
}

func TestReadVersionsSkipsCommentsAndBlanks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "versions.env")
	writeFile(t, path, "# pins\n\nETCD_VERSION=v3.6.17\n  HELM_VERSION=v4.3.2\n")
	got, err := readVersions(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ETCD_VERSION": "v3.6.17", "HELM_VERSION": "v4.3.2"}
	if !maps.Equal(got, want) {
		t.Fatalf("readVersions = %v, want %v", got, want)
	}
}

func TestToolPathNamesToolAndVersion(t *testing.T) {
	t.Setenv("TRIREME_TOOLS", "/tools")
	got, err := ToolPath(Etcd)
	if err != nil {
		t.Fatal(err)
	}
	if dir := filepath.Dir(got); !strings.HasPrefix(dir, "/tools/etcd-v") || filepath.Base(got) != "etcd" {
		t.Fatalf("ToolPath(etcd) = %q, want /tools/etcd-<version>/etcd", got)
	}
}

func TestControllerManagerRunsControllers(t *testing.T) {
	cp := Start(t, Options{ControllerManager: true})
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubetest"}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// The service account controller gives every namespace a default
	// account; pods cannot be created without it.
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := client.CoreV1().ServiceAccounts("kubetest").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return
		}
		select {
		case <-cp.ControllerManager.Exited():
			t.Fatal(cp.ControllerManager.ExitError())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no default service account after a minute: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestContainerRestartsItsProcess(t *testing.T) {
	c := StartContainer(t, "sleeper", "/bin/sh", "-c", "echo started; sleep 60")
	first := c.Process()
	first.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for c.Restarts() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not restarted after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.Process() == first {
		t.Fatal("Process returns the killed process after a restart")
	}
	c.Stop()
	select {
	case <-c.Process().Exited():
	default:
		t.Fatal("process still running after Stop")
	}
}
