package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/trireme-csi/trireme/pkg/api"
	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/csi"
	kubestore "github.com/trireme-csi/trireme/pkg/store/kube"
)

var (
	volumeResource = kubestore.VolumeResource
	nameResource   = kubestore.NameResource
	nodeResource   = kubestore.NodeResource
)

// The storage classes the tests claim from.
const (
	classImmediate = "trireme-immediate"
	classWFFC      = "trireme-wffc"
	classAnyZone   = "trireme-wffc-any-zone"
	classBadParam  = "trireme-bad-parameter"
	// classXFS is the class of the expansion test: growing a mounted
	// ext4 needs CAP_SYS_RESOURCE, which the machines the tests run on
	// may withhold even from root; xfs grows without it.
	classXFS = "trireme-xfs"
)

// createStorageClasses creates every class the tests use.
func (e *env) createStorageClasses() {
	params := map[string]string{csi.ParamReplicas: "3", "csi.storage.k8s.io/fstype": "ext4"}
	immediate, wffc := storagev1.VolumeBindingImmediate, storagev1.VolumeBindingWaitForFirstConsumer
	zones := []corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{
		{Key: api.ZoneTopologyKey, Values: []string{"zone-a", "zone-b", "zone-c"}}}}}
	for _, sc := range []*storagev1.StorageClass{
		{ObjectMeta: metav1.ObjectMeta{Name: classImmediate}, VolumeBindingMode: &immediate},
		{ObjectMeta: metav1.ObjectMeta{Name: classWFFC}, VolumeBindingMode: &wffc, AllowedTopologies: zones},
		{ObjectMeta: metav1.ObjectMeta{Name: classAnyZone}, VolumeBindingMode: &wffc},
		{ObjectMeta: metav1.ObjectMeta{Name: classBadParam}, VolumeBindingMode: &immediate,
			Parameters: map[string]string{csi.ParamReplicas: "seven"}},
		{ObjectMeta: metav1.ObjectMeta{Name: classXFS}, VolumeBindingMode: &immediate,
			Parameters: map[string]string{csi.ParamReplicas: "3", "csi.storage.k8s.io/fstype": "xfs"}},
	} {
		sc.Provisioner = csi.DriverName
		sc.AllowVolumeExpansion = ptr(true)
		if sc.Parameters == nil {
			sc.Parameters = params
		}
		e.create(sc)
	}
}

// createClaim creates a ReadWriteOnce Filesystem claim of size from class.
func (e *env) createClaim(name, class, size string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	pvc, err := e.tryCreateClaim(name, class, size)
	if err != nil {
		e.t.Fatal(err)
	}
	return pvc
}

// tryCreateClaim is createClaim for any goroutine.
func (e *env) tryCreateClaim(name, class, size string) (*corev1.PersistentVolumeClaim, error) {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr(class),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	pvc, err := e.kube.CoreV1().PersistentVolumeClaims(namespace).Create(e.ctx(), pvc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create claim %s: %w", name, err)
	}
	e.t.Cleanup(func() { e.deleteLeftover("claim", name) })
	return pvc, nil
}

func (e *env) claim(name string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	pvc, err := e.kube.CoreV1().PersistentVolumeClaims(namespace).Get(e.ctx(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get claim %s: %v", name, err)
	}
	return pvc
}

// boundPV waits until the claim is Bound and returns its volume.
func (e *env) boundPV(claim string) *corev1.PersistentVolume {
	e.t.Helper()
	var pv *corev1.PersistentVolume
	e.eventually(time.Minute, "claim "+claim+" bound", func() (bool, error) {
		pvc, err := e.kube.CoreV1().PersistentVolumeClaims(namespace).Get(e.ctx(), claim, metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimBound {
			return false, errors.Join(err, fmt.Errorf("phase %q", pvc.Status.Phase))
		}
		pv, err = e.kube.CoreV1().PersistentVolumes().Get(e.ctx(), pvc.Spec.VolumeName, metav1.GetOptions{})
		return err == nil, err
	})
	return pv
}

// deleteClaims deletes the claims and waits until their volumes, the
// volumes' custom resources and their replicas on every node are gone.
func (e *env) deleteClaims(claims ...string) {
	e.t.Helper()
	var pvs []*corev1.PersistentVolume
	for _, claim := range claims {
		if name := e.claim(claim).Spec.VolumeName; name != "" {
			pv, err := e.kube.CoreV1().PersistentVolumes().Get(e.ctx(), name, metav1.GetOptions{})
			if err != nil {
				e.t.Fatalf("get volume %s of %s: %v", name, claim, err)
			}
			pvs = append(pvs, pv)
		}
		if err := e.kube.CoreV1().PersistentVolumeClaims(namespace).Delete(e.ctx(), claim, metav1.DeleteOptions{}); err != nil {
			e.t.Fatalf("delete claim %s: %v", claim, err)
		}
	}
	for _, pv := range pvs {
		e.waitVolumeGone(pv)
	}
}

// waitVolumeGone waits until the PV, its TriremeVolume and its replicas
// are gone.
func (e *env) waitVolumeGone(pv *corev1.PersistentVolume) {
	e.t.Helper()
	id := pv.Spec.CSI.VolumeHandle
	e.eventually(time.Minute, "volume "+pv.Name+" deleted", func() (bool, error) {
		_, err := e.kube.CoreV1().PersistentVolumes().Get(e.ctx(), pv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	e.eventually(time.Minute, "record and replicas of "+id+" deleted", func() (bool, error) {
		if v := e.volumeByID(id); v != nil {
			return false, fmt.Errorf("TriremeVolume %s still there", v.GetName())
		}
		if nodes := e.replicaNodes(id); len(nodes) > 0 {
			return false, fmt.Errorf("replicas still on %v", nodes)
		}
		return true, nil
	})
}

// volumes lists the TriremeVolume custom resources.
func (e *env) volumes() []unstructured.Unstructured {
	e.t.Helper()
	list, err := e.dyn.Resource(volumeResource).List(e.ctx(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatalf("list TriremeVolumes: %v", err)
	}
	return list.Items
}

func (e *env) volumeByID(id string) *unstructured.Unstructured {
	for _, v := range e.volumes() {
		if specString(v, "volumeID") == id {
			return &v
		}
	}
	return nil
}

// volumesNamed returns the TriremeVolumes and TriremeVolumeNames whose
// CSI name is name: the external-provisioner names a claim's volume
// pvc-<claim uid>.
func (e *env) volumesNamed(name string) (volumes, names []string) {
	e.t.Helper()
	for _, v := range e.volumes() {
		if specString(v, "name") == name {
			volumes = append(volumes, v.GetName())
		}
	}
	list, err := e.dyn.Resource(nameResource).List(e.ctx(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatalf("list TriremeVolumeNames: %v", err)
	}
	for _, n := range list.Items {
		if specString(n, "name") == name {
			names = append(names, n.GetName())
		}
	}
	return volumes, names
}

func specString(obj unstructured.Unstructured, field string) string {
	s, _, _ := unstructured.NestedString(obj.Object, "spec", field)
	return s
}

// attachedNode returns the node the volume record says the volume is
// attached to.
func (e *env) attachedNode(id string) string {
	e.t.Helper()
	v := e.volumeByID(id)
	if v == nil {
		e.t.Fatalf("no TriremeVolume for %s", id)
	}
	node, _, _ := unstructured.NestedString(v.Object, "spec", "attachment", "nodeID")
	return node
}

// replicaZones returns the zone of each replica of the volume record, and
// the primary's zone.
func replicaZones(v *unstructured.Unstructured) (zones []string, primaryZone string) {
	replicas, _, _ := unstructured.NestedSlice(v.Object, "spec", "replicas")
	primary := specString(*v, "primary")
	for _, r := range replicas {
		m, _ := r.(map[string]any)
		zone, _ := m["zone"].(string)
		zones = append(zones, zone)
		if m["nodeID"] == primary {
			primaryZone = zone
		}
	}
	slices.Sort(zones)
	return zones, primaryZone
}

// replicaNodes lists the node agents that hold a replica of the volume.
func (e *env) replicaNodes(id string) []string {
	e.t.Helper()
	var out []string
	for id2, ids := range e.replicasByNode() {
		if slices.Contains(ids, id) {
			out = append(out, id2)
		}
	}
	slices.Sort(out)
	return out
}

// replicasByNode lists the volume ids each node agent holds.
func (e *env) replicasByNode() map[string][]string {
	e.t.Helper()
	out := map[string][]string{}
	for _, n := range e.sys.Nodes {
		list, err := n.Client.ListVolumes(e.ctx(), &apiv1.ListVolumesRequest{})
		if err != nil {
			e.t.Fatalf("list volumes on %s: %v", n.ID, err)
		}
		for _, v := range list.GetVolumes() {
			out[n.ID] = append(out[n.ID], v.GetVolumeId())
		}
	}
	return out
}

// createPod creates a pod that uses the claim and names its node, as a
// pod the scheduler has placed.
func (e *env) createPod(name, node, claim string) *corev1.Pod {
	e.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "app", Image: "app"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}},
		},
	}
	var err error
	// The service account controller makes the namespace's default
	// account soon after the namespace; pods are refused until then.
	e.eventually(30*time.Second, "create pod "+name, func() (bool, error) {
		pod, err = e.kube.CoreV1().Pods(namespace).Create(e.ctx(), pod, metav1.CreateOptions{})
		return err == nil, err
	})
	e.t.Cleanup(func() { e.deleteLeftover("pod", name) })
	return pod
}

// deletePod deletes the pod at once: no kubelet will confirm it stopped.
func (e *env) deletePod(name string) {
	e.t.Helper()
	err := e.kube.CoreV1().Pods(namespace).Delete(e.ctx(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if err != nil {
		e.t.Fatalf("delete pod %s: %v", name, err)
	}
}

// selectNode does the scheduler's part for a WaitForFirstConsumer claim
// whose pod is placed on node.
func (e *env) selectNode(claim, node string) {
	e.t.Helper()
	pvc := e.claim(claim)
	if pvc.Annotations == nil {
		pvc.Annotations = map[string]string{}
	}
	pvc.Annotations["volume.kubernetes.io/selected-node"] = node
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(namespace).Update(e.ctx(), pvc, metav1.UpdateOptions{}); err != nil {
		e.t.Fatalf("select node %s for %s: %v", node, claim, err)
	}
}

// waitWarning waits for a Warning event on the claim with the reason,
// whose message holds every one of the words, and returns the message.
func (e *env) waitWarning(claim, reason string, words ...string) string {
	e.t.Helper()
	var msg string
	e.eventually(time.Minute, reason+" event on "+claim, func() (bool, error) {
		list, err := e.kube.CoreV1().Events(namespace).List(e.ctx(), metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": claim, "involvedObject.kind": "PersistentVolumeClaim"}.String()})
		if err != nil {
			return false, err
		}
		var seen []string
		for _, ev := range list.Items {
			seen = append(seen, ev.Reason+": "+ev.Message)
			if ev.Type == corev1.EventTypeWarning && ev.Reason == reason && containsAll(ev.Message, words) {
				msg = ev.Message
				return true, nil
			}
		}
		return false, fmt.Errorf("events: %q", seen)
	})
	return msg
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// waitEventReason waits for an event on the claim with the reason.
func (e *env) waitEventReason(claim, reason string) {
	e.t.Helper()
	e.eventually(time.Minute, reason+" event on "+claim, func() (bool, error) {
		list, err := e.kube.CoreV1().Events(namespace).List(e.ctx(), metav1.ListOptions{
			FieldSelector: fields.Set{"involvedObject.name": claim, "reason": reason}.String()})
		if err != nil {
			return false, err
		}
		return len(list.Items) > 0, fmt.Errorf("none yet")
	})
}

// deleteLeftover deletes a pod or claim that a failed check left behind,
// so that the next check starts clean.
func (e *env) deleteLeftover(kind, name string) {
	ctx := context.Background()
	var err error
	switch kind {
	case "pod":
		err = e.kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	case "claim":
		err = e.kube.CoreV1().PersistentVolumeClaims(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	}
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Logf("delete %s %s: %v", kind, name, err)
	}
}
