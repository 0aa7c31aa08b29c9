package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trireme-csi/trireme/pkg/csi"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// TestKubernetes starts the whole system once and runs each check against
// it in turn. A check leaves nothing behind for the next: its claims,
// pods, volumes and replicas are gone when it passes.
func TestKubernetes(t *testing.T) {
	e := startEnv(t)
	e.createStorageClasses()
	for _, c := range []struct {
		name string
		run  func(*env)
	}{
		{"ImmediateClaimBindsToAThreeZoneVolume", testImmediateBinding},
		{"WaitForFirstConsumerPutsThePrimaryInThePodsZone", testFirstConsumerZone},
		{"PodOnANodeAttachesStagesAndDetaches", testAttachAndMount},
		{"OnlineExpansionGrowsTheMountedFilesystem", testOnlineExpansion},
		{"InvalidParameterIsRefusedWithAnEvent", testInvalidParameter},
		{"ClaimLargerThanAnyNodeIsRefusedWithAnEvent", testTooLarge},
		{"ConsumerInAZoneWithoutStorageIsRefusedWithAnEvent", testZoneWithoutStorage},
		{"LeaderKilledDuringAProvisioningBurst", testLeaderKilledDuringBurst},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(e.sub(t)) })
	}
}

// sub is e for a subtest.
func (e *env) sub(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

// testImmediateBinding: a claim from an Immediate class binds at once, and
// its volume is Trireme's, with a replica in each zone.
func testImmediateBinding(e *env) {
	e.createClaim("immediate", classImmediate, "64Mi")
	pv := e.boundPV("immediate")
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != csi.DriverName || pv.Spec.CSI.VolumeHandle == "" {
		e.t.Fatalf("PV %s source = %+v, want driver %s and a volume handle", pv.Name, pv.Spec.CSI, csi.DriverName)
	}
	v := e.volumeByID(pv.Spec.CSI.VolumeHandle)
	if v == nil {
		e.t.Fatalf("no TriremeVolume for %s", pv.Spec.CSI.VolumeHandle)
	}
	if zones, _ := replicaZones(v); !slices.Equal(zones, []string{"zone-a", "zone-b", "zone-c"}) {
		e.t.Errorf("replicas in zones %v, want one in each of zone-a, zone-b, zone-c", zones)
	}
	e.deleteClaims("immediate")
}

// testFirstConsumerZone: a WaitForFirstConsumer claim waits for its pod,
// then binds with the primary in the pod's node's zone.
func testFirstConsumerZone(e *env) {
	e.createClaim("first-consumer", classWFFC, "64Mi")
	e.waitEventReason("first-consumer", "WaitForFirstConsumer")
	if pvc := e.claim("first-consumer"); pvc.Status.Phase != corev1.ClaimPending {
		e.t.Fatalf("claim without a consumer is %q, want Pending", pvc.Status.Phase)
	}
	e.createPod("first-consumer", "node-c", "first-consumer")
	e.selectNode("first-consumer", "node-c")
	pv := e.boundPV("first-consumer")
	v := e.volumeByID(pv.Spec.CSI.VolumeHandle)
	if v == nil {
		e.t.Fatalf("no TriremeVolume for %s", pv.Spec.CSI.VolumeHandle)
	}
	if _, primary := replicaZones(v); primary != "zone-c" {
		e.t.Errorf("primary in zone %q, want zone-c, the consumer's", primary)
	}
	e.deletePod("first-consumer")
	e.waitDetached(pv.Name)
	e.deleteClaims("first-consumer")
}

// testAttachAndMount: a pod placed on a node gets its volume attached by
// the attach/detach controller and csi-attacher; the kubelet's calls
// stage, publish and write to it; deleting the pod detaches it, and
// deleting the claim deletes the volume and every replica.
func testAttachAndMount(e *env) {
	e.createClaim("mounted", classImmediate, "128Mi")
	pv := e.boundPV("mounted")
	pod := e.createPod("mounted", "node-a", "mounted")
	v := e.mount(pod)
	if got := e.attachedNode(v.id()); got != "node-a" {
		e.t.Errorf("volume record attached to %q, want node-a", got)
	}
	v.writeAndCheck("data", 8<<20)
	v.unmount()

	e.deletePod("mounted")
	e.waitDetached(pv.Name)
	if got := e.attachedNode(v.id()); got != "" {
		e.t.Errorf("volume record attached to %q after detach, want none", got)
	}
	e.deleteClaims("mounted")
}

// testOnlineExpansion: growing a mounted claim's request runs
// ControllerExpandVolume through csi-resizer and, the kubelet's part,
// NodeExpandVolume; the filesystem the pod sees grows.
func testOnlineExpansion(e *env) {
	if !e.controllerHas(csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME) {
		e.t.Fatal("the controller does not offer EXPAND_VOLUME")
	}
	e.createClaim("expanded", classXFS, "320Mi") // xfs needs 300 MiB
	pv := e.boundPV("expanded")
	pod := e.createPod("expanded", "node-b", "expanded")
	v := e.mount(pod)
	before := v.fsSize()

	const grown = 768 << 20
	e.requestSize("expanded", grown)
	e.eventually(time.Minute, "PV "+pv.Name+" grown by csi-resizer", func() (bool, error) {
		got, err := e.kube.CoreV1().PersistentVolumes().Get(e.ctx(), pv.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		size := got.Spec.Capacity[corev1.ResourceStorage]
		return size.Value() >= grown, fmt.Errorf("capacity %s", size.String())
	})
	v.expand(grown)
	after := v.fsSize()
	if after < before+(grown-320<<20)*9/10 {
		e.t.Errorf("filesystem is %d bytes after expansion, was %d; want it about %d bytes larger",
			after, before, grown-320<<20)
	}
	v.writeAndCheck("after-expansion", 200<<20)
	v.unmount()
	e.deletePod("expanded")
	e.waitDetached(pv.Name)
	e.deleteClaims("expanded")
}

// controllerHas asks the leading controller whether it offers a
// capability.
func (e *env) controllerHas(want csipb.ControllerServiceCapability_RPC_Type) bool {
	e.t.Helper()
	lead, _ := e.leader()
	conn, err := localcluster.DialUnix(lead.socket)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	resp, err := csipb.NewControllerClient(conn).ControllerGetCapabilities(e.ctx(), &csipb.ControllerGetCapabilitiesRequest{})
	if err != nil {
		e.t.Fatalf("ControllerGetCapabilities: %v", err)
	}
	for _, c := range resp.GetCapabilities() {
		if c.GetRpc().GetType() == want {
			return true
		}
	}
	return false
}

// requestSize patches the claim's storage request.
func (e *env) requestSize(claim string, bytes int64) {
	e.t.Helper()
	patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":%q}}}}`, resource.NewQuantity(bytes, resource.BinarySI).String())
	_, err := e.kube.CoreV1().PersistentVolumeClaims(namespace).Patch(e.ctx(), claim, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		e.t.Fatalf("resize %s: %v", claim, err)
	}
}

// testInvalidParameter: a class with a wrong parameter value gets the
// claim a warning that names the parameter, and no volume.
func testInvalidParameter(e *env) {
	pvc := e.createClaim("bad-parameter", classBadParam, "64Mi")
	e.waitWarning("bad-parameter", "ProvisioningFailed", "InvalidArgument", csi.ParamReplicas)
	e.checkNothingMadeFor(pvc)
	e.deleteClaims("bad-parameter")
}

// testTooLarge: a claim larger than any node's capacity gets a warning
// and no volume.
func testTooLarge(e *env) {
	pvc := e.createClaim("too-large", classImmediate, "64Gi")
	e.waitWarning("too-large", "ProvisioningFailed", "OutOfRange")
	e.checkNothingMadeFor(pvc)
	e.deleteClaims("too-large")
}

// testZoneWithoutStorage: a WaitForFirstConsumer claim whose pod is placed
// in a zone with no storage node gets a warning naming the zone, and no
// volume.
func testZoneWithoutStorage(e *env) {
	pvc := e.createClaim("no-storage-zone", classAnyZone, "64Mi")
	e.createPod("no-storage-zone", consumerNode.ID, "no-storage-zone")
	e.selectNode("no-storage-zone", consumerNode.ID)
	e.waitWarning("no-storage-zone", "ProvisioningFailed", consumerNode.Zone)
	e.checkNothingMadeFor(pvc)
	e.deletePod("no-storage-zone")
	e.deleteClaims("no-storage-zone")
}

// checkNothingMadeFor checks that a claim whose provisioning failed left
// no volume record, name claim or replica behind, and is still Pending.
func (e *env) checkNothingMadeFor(pvc *corev1.PersistentVolumeClaim) {
	e.t.Helper()
	if got := e.claim(pvc.Name); got.Status.Phase != corev1.ClaimPending {
		e.t.Errorf("claim %s is %q, want Pending", pvc.Name, got.Status.Phase)
	}
	volumes, names := e.volumesNamed("pvc-" + string(pvc.UID))
	if len(volumes)+len(names) > 0 {
		e.t.Errorf("refused claim %s left TriremeVolumes %v and TriremeVolumeNames %v", pvc.Name, volumes, names)
	}
	e.checkNoOrphans()
}

// checkNoOrphans checks that every replica on a node belongs to a volume
// record, and every volume record to a PV.
func (e *env) checkNoOrphans() {
	e.t.Helper()
	for _, o := range e.orphans() {
		e.t.Error(o)
	}
}

// orphans lists the volume records without a PV and the replicas without
// a volume record.
func (e *env) orphans() []string {
	e.t.Helper()
	pvs, err := e.kube.CoreV1().PersistentVolumes().List(e.ctx(), metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	handles := map[string]bool{}
	for _, pv := range pvs.Items {
		handles[pv.Spec.CSI.VolumeHandle] = true
	}
	var out []string
	records := map[string]bool{}
	for _, v := range e.volumes() {
		id := specString(v, "volumeID")
		records[id] = true
		if !handles[id] {
			out = append(out, fmt.Sprintf("TriremeVolume %s (%s) has no PV", v.GetName(), specString(v, "name")))
		}
	}
	for node, ids := range e.replicasByNode() {
		for _, id := range ids {
			if !records[id] {
				out = append(out, fmt.Sprintf("node %s holds a replica of %s, which has no record", node, id))
			}
		}
	}
	return out
}

// testLeaderKilledDuringBurst: 20 claims are created at once and the
// leading controller is killed while they are provisioned. The other
// replica takes over: every claim binds, each to its own volume, and
// there is exactly one volume record per PV.
func testLeaderKilledDuringBurst(e *env) {
	const n = 20
	lead, identity := e.leader()
	var wg sync.WaitGroup
	claims := make([]*corev1.PersistentVolumeClaim, n)
	for i := range n {
		wg.Go(func() {
			var err error
			if claims[i], err = e.tryCreateClaim(fmt.Sprintf("burst-%02d", i), classImmediate, "32Mi"); err != nil {
				e.t.Error(err)
			}
		})
	}
	e.eventually(time.Minute, "provisioning under way", func() (bool, error) {
		return len(e.volumes()) > 0, fmt.Errorf("no volume record yet")
	})
	lead.proc.Process().Kill()
	bound := e.boundCount()
	e.t.Logf("killed the leader %s with %d of %d claims bound", lead.name, bound, n)
	wg.Wait()
	if e.t.Failed() {
		return
	}

	next, _ := e.leaderOtherThan(identity)
	e.t.Logf("%s leads now", next.name)
	handles := map[string]string{}
	for _, pvc := range claims {
		pv := e.boundPV(pvc.Name)
		if other, dup := handles[pv.Spec.CSI.VolumeHandle]; dup {
			e.t.Errorf("claims %s and %s share volume %s", other, pvc.Name, pv.Spec.CSI.VolumeHandle)
		}
		handles[pv.Spec.CSI.VolumeHandle] = pvc.Name
		if volumes, _ := e.volumesNamed("pvc-" + string(pvc.UID)); len(volumes) != 1 {
			e.t.Errorf("claim %s has volume records %v, want exactly one", pvc.Name, volumes)
		}
	}
	// A leak the controller collects soon is no leak.
	e.eventually(30*time.Second, "no leaked volume or replica", func() (bool, error) {
		o := e.orphans()
		return len(o) == 0, fmt.Errorf("%q", o)
	})
	var names []string
	for _, pvc := range claims {
		names = append(names, pvc.Name)
	}
	e.deleteClaims(names...)
}

// boundCount counts the claims that are bound.
func (e *env) boundCount() int {
	list, err := e.kube.CoreV1().PersistentVolumeClaims(namespace).List(e.ctx(), metav1.ListOptions{})
	if err != nil {
		return -1
	}
	n := 0
	for _, pvc := range list.Items {
		if pvc.Status.Phase == corev1.ClaimBound {
			n++
		}
	}
	return n
}
