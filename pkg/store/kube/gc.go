package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/store"
)

// CollectGarbage deletes what interrupted creates and deletes left
// behind, once it is older than minAge, and returns how many objects it
// deleted:
//   - a TriremeVolume that the claim of its name does not name. It can
//     never count again: a create claims the name before it creates the
//     volume, and gives up if the claim changed hands meanwhile.
//   - a claim whose volume is missing. A create in progress that loses
//     its claim this way notices and reports ErrExists.
//
// Every delete carries the resourceVersion it judged, so an object that
// changed meanwhile is kept.
func (s *Store) CollectGarbage(ctx context.Context, minAge time.Duration) (int, error) {
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	claims, err := s.res.list(ctx, NameResource, 0)
	if err != nil {
		return 0, fmt.Errorf("collect garbage: %w", storeErr(err))
	}
	objs, err := s.res.list(ctx, VolumeResource, 0)
	if err != nil {
		return 0, fmt.Errorf("collect garbage: %w", storeErr(err))
	}
	// Claims are listed before volumes: a volume created after its claim
	// was listed is young, and is not judged.
	owners := map[string]string{}
	for i := range claims {
		var c nameObject
		if err := fromUnstructured(&claims[i], &c); err != nil {
			return 0, fmt.Errorf("collect garbage: %w", err)
		}
		owners[c.Spec.Name] = c.Spec.VolumeID
	}
	cutoff := time.Now().Add(-minAge)
	exists := map[string]bool{}
	deleted := 0
	for i := range objs {
		u := &objs[i]
		var o volumeObject
		if err := fromUnstructured(u, &o); err != nil {
			return deleted, fmt.Errorf("collect garbage: %w", err)
		}
		exists[o.Spec.VolumeID] = true
		if owners[o.Spec.Name] == o.Spec.VolumeID || !u.GetCreationTimestamp().Time.Before(cutoff) {
			continue
		}
		// The claims were listed before this volume may have been made
		// (and the API server's clock, which dates it, may be ahead of
		// this one): read its claim again. A create claims the name
		// before it makes the volume, so a claim naming it now means it
		// counts.
		if owner, err := s.claimOwner(ctx, o.Spec.Name); err == nil && owner == o.Spec.VolumeID {
			continue
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return deleted, fmt.Errorf("collect garbage: %w", err)
		}
		if s.collect(ctx, VolumeResource, u, "volume", o.Spec.VolumeID, "name", o.Spec.Name) {
			deleted++
		}
	}
	for i := range claims {
		u := &claims[i]
		var c nameObject
		_ = fromUnstructured(u, &c) // decoded above
		if exists[c.Spec.VolumeID] || !claimedAt(u).Before(cutoff) {
			continue
		}
		if _, err := s.res.get(ctx, VolumeResource, objectName(c.Spec.VolumeID)); !apierrors.IsNotFound(err) {
			continue // created since the list, or unknown
		}
		if s.collect(ctx, NameResource, u, "name", c.Spec.Name, "volume", c.Spec.VolumeID) {
			deleted++
		}
	}
	return deleted, ctx.Err()
}

// collect deletes u if it is unchanged, and logs what it deleted.
func (s *Store) collect(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured, kv ...any) bool {
	err := s.res.delete(ctx, gvr, u.GetName(), u.GetResourceVersion())
	switch {
	case err == nil:
		klog.InfoS("Deleted an object left by an interrupted create or delete", append([]any{"resource", gvr.Resource, "object", u.GetName()}, kv...)...)
		return true
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return false
	}
	klog.InfoS("Could not delete an object left by an interrupted create or delete", append([]any{"resource", gvr.Resource, "object", u.GetName(), "err", err}, kv...)...)
	return false
}

// claimedAt returns when the claim last changed hands: its annotation, or
// its creation time if it has none.
func claimedAt(u *unstructured.Unstructured) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, u.GetAnnotations()[claimedAtAnnotation]); err == nil {
		return t
	}
	return u.GetCreationTimestamp().Time
}
