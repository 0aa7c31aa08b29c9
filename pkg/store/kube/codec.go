package kube

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// Health of a volume, as the status shows it.
const (
	// HealthHealthy: every replica is InSync.
	HealthHealthy = "Healthy"
	// HealthDegraded: fewer replicas are InSync than the volume has, but
	// at least MinInSyncReplicas; writes go on.
	HealthDegraded = "Degraded"
	// HealthBlocked: fewer than MinInSyncReplicas are InSync; writes stop.
	HealthBlocked = "Blocked"
)

func encodeVolume(v store.Volume) volumeObject {
	spec := volumeSpec{
		VolumeID: v.ID, Name: v.Name, SizeBytes: v.Size, Parameters: v.Parameters,
		Fingerprint: v.Fingerprint, Epoch: formatUint(v.Layout.Epoch), Primary: v.Layout.Primary,
		Attachment: attachmentSpec{
			NodeID: v.Attachment.NodeID, Generation: formatUint(v.Attachment.Generation),
			EnforcedGeneration: formatUint(v.Layout.AttachmentGeneration),
		},
		MinInSyncReplicas: int64(v.MinInSyncReplicas), Created: formatTime(v.Created),
		Revision: formatUint(v.Revision),
	}
	for _, r := range v.Layout.Replicas {
		spec.Replicas = append(spec.Replicas, replicaSpec{
			NodeID: r.NodeID, Zone: r.Zone, Address: r.Address, State: string(r.State),
		})
	}
	return volumeObject{Spec: spec, Status: summarize(v)}
}

func decodeVolume(o volumeObject) (store.Volume, error) {
	s := o.Spec
	v := store.Volume{
		ID: s.VolumeID, Name: s.Name, Size: s.SizeBytes, Parameters: nilIfEmpty(s.Parameters),
		Fingerprint: s.Fingerprint, MinInSyncReplicas: int(s.MinInSyncReplicas),
		Layout:     replication.Layout{VolumeID: s.VolumeID, Size: s.SizeBytes, Primary: s.Primary},
		Attachment: store.Attachment{NodeID: s.Attachment.NodeID},
	}
	for _, r := range s.Replicas {
		v.Layout.Replicas = append(v.Layout.Replicas, replication.ReplicaInfo{
			NodeID: r.NodeID, Zone: r.Zone, Address: r.Address, State: replication.ReplicaState(r.State),
		})
	}
	var err error
	for _, f := range []struct {
		what string
		in   string
		out  *uint64
	}{
		{"epoch", s.Epoch, &v.Layout.Epoch},
		{"attachment generation", s.Attachment.Generation, &v.Attachment.Generation},
		{"enforced generation", s.Attachment.EnforcedGeneration, &v.Layout.AttachmentGeneration},
		{"revision", s.Revision, &v.Revision},
	} {
		if *f.out, err = parseUint(f.what, f.in); err != nil {
			return store.Volume{}, err
		}
	}
	if v.Created, err = parseTime("created", s.Created); err != nil {
		return store.Volume{}, err
	}
	if err := v.Validate(); err != nil {
		return store.Volume{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return v, nil
}

// summarize derives the status that kubectl's printer columns show.
func summarize(v store.Volume) volumeStatus {
	var zones []string
	var inSync int
	var lagging []string
	for _, r := range v.Layout.Replicas {
		if r.Zone != "" && !contains(zones, r.Zone) {
			zones = append(zones, r.Zone)
		}
		if r.State == replication.InSync {
			inSync++
		} else {
			lagging = append(lagging, r.NodeID+"="+string(r.State))
		}
	}
	st := volumeStatus{
		Size:     resource.NewQuantity(v.Size, resource.BinarySI).String(),
		Replicas: int64(len(v.Layout.Replicas)), InSync: int64(inSync),
		Zones: strings.Join(zones, ","), Health: HealthHealthy, Sync: "complete",
	}
	if len(lagging) > 0 {
		st.Health, st.Sync = HealthDegraded, strings.Join(lagging, ",")
	}
	if inSync < v.MinInSyncReplicas {
		st.Health = HealthBlocked
	}
	return st
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func encodeNode(n store.Node) nodeObject {
	return nodeObject{Spec: nodeSpec{
		NodeID: n.ID, Zone: n.Zone, Topology: n.Topology, DataAddress: n.DataAddress,
		APIAddress: n.APIAddress, CapacityBytes: n.CapacityBytes,
		LastHeartbeat: formatTime(n.LastHeartbeat), Revision: formatUint(n.Revision),
	}}
}

func decodeNode(o nodeObject) (store.Node, error) {
	s := o.Spec
	n := store.Node{
		ID: s.NodeID, Zone: s.Zone, Topology: nilIfEmpty(s.Topology), DataAddress: s.DataAddress,
		APIAddress: s.APIAddress, CapacityBytes: s.CapacityBytes,
	}
	var err error
	if n.Revision, err = parseUint("revision", s.Revision); err != nil {
		return store.Node{}, err
	}
	if n.LastHeartbeat, err = parseTime("last heartbeat", s.LastHeartbeat); err != nil {
		return store.Node{}, err
	}
	if err := n.Validate(); err != nil {
		return store.Node{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return n, nil
}

func formatUint(n uint64) string { return strconv.FormatUint(n, 10) }

func parseUint(what, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q: %v", ErrCorrupt, what, s, err)
	}
	return n, nil
}

// formatTime keeps nanoseconds, more than the store's contract asks.
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(what, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s %q: %v", ErrCorrupt, what, s, err)
	}
	return t.UTC(), nil
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

// toUnstructured makes the object of kind named name, with spec and
// status from typed, and resourceVersion rv (empty for a new object).
func toUnstructured(kind, name, rv string, typed any) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(typed)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(Group + "/" + Version)
	u.SetKind(kind)
	u.SetName(name)
	u.SetResourceVersion(rv)
	return u, nil
}

// fromUnstructured fills typed from u's spec and status.
func fromUnstructured(u *unstructured.Unstructured, typed any) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, typed); err != nil {
		return fmt.Errorf("%w: object %s: %v", ErrCorrupt, u.GetName(), err)
	}
	return nil
}
