package kube

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/controller"
	"github.com/trireme-csi/trireme/pkg/store"
	storekube "github.com/trireme-csi/trireme/pkg/store/kube"
)

// eventTimeout bounds the lookups that find an event's objects.
const eventTimeout = 10 * time.Second

// The parameters the external-provisioner adds with
// --extra-create-metadata.
const (
	paramPVCName      = "csi.storage.k8s.io/pvc/name"
	paramPVCNamespace = "csi.storage.k8s.io/pvc/namespace"
)

// Events records volume events on the volume's TriremeVolume and on its
// PersistentVolumeClaim. The claim is found through the PersistentVolume
// named as the volume (the external-provisioner names volumes after their
// PV), whose claimRef carries the claim's uid that kubectl describe
// matches events by.
type Events struct {
	client      kubernetes.Interface
	dyn         dynamic.Interface
	recorder    record.EventRecorder
	broadcaster record.EventBroadcaster // nil when the recorder came from a test
	wait        chan struct{}           // receives when a recording finished, in tests
}

var _ controller.EventSink = (*Events)(nil)

// NewEvents returns Events that writes through client.
func NewEvents(client kubernetes.Interface, dyn dynamic.Interface) *Events {
	b := record.NewBroadcaster()
	b.StartStructuredLogging(4)
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	rec := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "trireme-controller"})
	return &Events{client: client, dyn: dyn, recorder: rec, broadcaster: b}
}

// Close stops sending events; the ones queued are sent first.
func (e *Events) Close() {
	if e.broadcaster != nil {
		e.broadcaster.Shutdown()
	}
}

// VolumeEvent implements controller.EventSink. It finds the objects in
// the background and never blocks.
func (e *Events) VolumeEvent(v store.Volume, reason, message string, warning bool) {
	kind := corev1.EventTypeNormal
	if warning {
		kind = corev1.EventTypeWarning
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		for _, ref := range e.references(ctx, v) {
			e.recorder.Event(ref, kind, reason, message)
		}
		if e.wait != nil {
			e.wait <- struct{}{}
		}
	}()
}

// references returns the volume's TriremeVolume and, if found, its claim.
func (e *Events) references(ctx context.Context, v store.Volume) []*corev1.ObjectReference {
	refs := []*corev1.ObjectReference{e.volumeRef(ctx, v)}
	if claim := e.claimRef(ctx, v); claim != nil {
		refs = append(refs, claim)
	}
	return refs
}

func (e *Events) volumeRef(ctx context.Context, v store.Volume) *corev1.ObjectReference {
	ref := &corev1.ObjectReference{
		APIVersion: storekube.Group + "/" + storekube.Version, Kind: storekube.VolumeKind,
		Name: storekube.VolumeObjectName(v.ID),
	}
	u, err := e.dyn.Resource(storekube.VolumeResource).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		klog.V(2).InfoS("Volume event without its object's uid", "volume", v.ID, "err", err)
		return ref
	}
	ref.UID = u.GetUID()
	return ref
}

// claimRef finds the PersistentVolumeClaim of v: through its
// PersistentVolume, or the provisioner's parameters if the record kept
// them.
func (e *Events) claimRef(ctx context.Context, v store.Volume) *corev1.ObjectReference {
	pv, err := e.client.CoreV1().PersistentVolumes().Get(ctx, v.Name, metav1.GetOptions{})
	if err == nil && pv.Spec.CSI != nil && pv.Spec.CSI.VolumeHandle == v.ID && pv.Spec.ClaimRef != nil {
		c := pv.Spec.ClaimRef
		return &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim",
			Namespace: c.Namespace, Name: c.Name, UID: c.UID}
	}
	name, ns := v.Parameters[paramPVCName], v.Parameters[paramPVCNamespace]
	if name == "" || ns == "" {
		klog.V(2).InfoS("Volume event without a claim: no bound PersistentVolume names it", "volume", v.ID, "name", v.Name)
		return nil
	}
	pvc, err := e.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return &corev1.ObjectReference{APIVersion: "v1", Kind: "PersistentVolumeClaim",
		Namespace: ns, Name: name, UID: pvc.UID}
}
