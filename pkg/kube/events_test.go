package kube

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
	storekube "github.com/trireme-csi/trireme/pkg/store/kube"
)

// TestEventsReachVolumeAndClaim records a Failover on a volume bound to a
// claim, and finds it on both objects, by their uids as kubectl describe
// looks for them.
func TestEventsReachVolumeAndClaim(t *testing.T) {
	cp := startCluster(t)
	cfg := cp.RESTConfig()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := storekube.InstallCRDs(ctx, cfg, filepath.Join("..", "..", "deploy", "crds")); err != nil {
		t.Fatal(err)
	}
	client := clientOf(t, cp)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := storekube.NewForClient(dyn)
	v, err := s.CreateVolume(ctx, store.Volume{ID: "vol-1", Name: "pvc-1234", Size: 1 << 30,
		Layout:  replication.Layout{VolumeID: "vol-1", Size: 1 << 30, Epoch: 2},
		Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	claimUID := bind(t, client, v)

	e := NewEvents(client, dyn)
	defer e.Close()
	e.VolumeEvent(v, "Failover", "primary n1 lost; n2 in zone-b serves at epoch 3", true)

	u, err := dyn.Resource(storekube.VolumeResource).Get(ctx, "vol-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, client, "default", u.GetUID())
	waitEvent(t, client, "apps", claimUID)
}

// bind makes the claim and the PersistentVolume the provisioner would
// make for v, and returns the claim's uid.
func bind(t *testing.T, client kubernetes.Interface, v store.Volume) types.UID {
	t.Helper()
	ctx := t.Context()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	size := resource.MustParse("1Gi")
	pvc, err := client.CoreV1().PersistentVolumeClaims("apps").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: v.Name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "trireme.dev", VolumeHandle: v.ID}},
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "apps", Name: "data", UID: pvc.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pvc.UID
}

func waitEvent(t *testing.T, client kubernetes.Interface, namespace string, uid types.UID) {
	t.Helper()
	sel := fields.OneTermEqualSelector("involvedObject.uid", string(uid)).String()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		l, err := client.CoreV1().Events(namespace).List(t.Context(), metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range l.Items {
			if ev.Reason == "Failover" && ev.Type == corev1.EventTypeWarning &&
				ev.Message == "primary n1 lost; n2 in zone-b serves at epoch 3" {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("no Failover event on object %s in namespace %s", uid, namespace)
}
