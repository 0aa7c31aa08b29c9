package kube

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/store"
)

// CreateVolume implements store.Store. It claims the name, then creates
// the TriremeVolume; see the package comment.
func (s *Store) CreateVolume(ctx context.Context, v store.Volume) (store.Volume, error) {
	out, err := s.createVolume(ctx, v)
	if err != nil {
		return store.Volume{}, fmt.Errorf("create volume %s named %q: %w", v.ID, v.Name, err)
	}
	return out, nil
}

func (s *Store) createVolume(ctx context.Context, v store.Volume) (store.Volume, error) {
	if err := s.begin(ctx); err != nil {
		return store.Volume{}, err
	}
	if v.Revision != 0 {
		return store.Volume{}, fmt.Errorf("%w: revision %d, want 0 for a new volume", store.ErrInvalid, v.Revision)
	}
	if err := v.Validate(); err != nil {
		return store.Volume{}, err
	}
	v.Revision = 1
	obj := encodeVolume(v)
	u, err := toUnstructured(VolumeKind, objectName(v.ID), "", &obj)
	if err != nil {
		return store.Volume{}, err
	}
	if err := s.claimName(ctx, v.Name, v.ID); err != nil {
		return store.Volume{}, err
	}
	// From here until the TriremeVolume exists, the claim names a missing
	// volume, and a concurrent create of the name may take it over.
	created, err := s.res.create(ctx, VolumeResource, u)
	if apierrors.IsAlreadyExists(err) {
		s.releaseName(ctx, v.Name, v.ID)
		return store.Volume{}, fmt.Errorf("%w: id is taken", store.ErrExists)
	}
	if err != nil {
		// The object may have been created all the same (a timeout after
		// the server acted): then the volume exists, and a retried create
		// finds it by name. If not, the next create takes the claim over.
		return store.Volume{}, storeErr(err)
	}
	owner, err := s.claimOwner(ctx, v.Name)
	switch {
	case err == nil && owner == v.ID:
		return s.decodeVolume(created, v.ID)
	case err == nil, errors.Is(err, store.ErrNotFound):
		s.dropUnclaimed(created)
		return store.Volume{}, fmt.Errorf("%w: a concurrent create took the name over", store.ErrExists)
	}
	return store.Volume{}, err
}

// claimName makes the claim of name point at id, if no volume holds the
// name. A claim whose volume is missing is taken over.
func (s *Store) claimName(ctx context.Context, name, id string) error {
	obj := nameObject{Spec: nameSpec{Name: name, VolumeID: id}}
	for {
		u, err := toUnstructured(NameKind, objectName(name), "", &obj)
		if err != nil {
			return err
		}
		stampClaim(u)
		_, err = s.res.create(ctx, NameResource, u)
		if !apierrors.IsAlreadyExists(err) {
			return storeErr(err)
		}
		claim, err := s.res.get(ctx, NameResource, objectName(name))
		if apierrors.IsNotFound(err) {
			continue // deleted meanwhile: create it again
		}
		if err != nil {
			return storeErr(err)
		}
		done, err := s.takeOver(ctx, claim, name, id)
		if done || err != nil {
			return err
		}
	}
}

// claimedAtAnnotation on a claim holds when it last changed hands, so
// that CollectGarbage leaves young claims alone.
const claimedAtAnnotation = Group + "/claimed-at"

func stampClaim(u *unstructured.Unstructured) {
	a := u.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[claimedAtAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
	u.SetAnnotations(a)
}

// takeOver points a claim at id if the volume it names is gone. It
// returns done when the claim names id, ErrExists when another volume
// holds the name, and neither when the claim changed meanwhile: the
// caller reads it again.
func (s *Store) takeOver(ctx context.Context, claim *unstructured.Unstructured, name, id string) (bool, error) {
	var c nameObject
	if err := fromUnstructured(claim, &c); err != nil {
		return false, err
	}
	if c.Spec.Name != name {
		return false, fmt.Errorf("%w: claim %s holds name %q, want %q", ErrCorrupt, claim.GetName(), c.Spec.Name, name)
	}
	if c.Spec.VolumeID == id {
		return true, nil
	}
	holder, err := s.volumeObject(ctx, c.Spec.VolumeID)
	switch {
	case err == nil && holder.Name == name:
		return false, fmt.Errorf("%w: name is taken by volume %s", store.ErrExists, holder.ID)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return false, err
	}
	c.Spec.VolumeID = id
	u, err := toUnstructured(NameKind, claim.GetName(), claim.GetResourceVersion(), &c)
	if err != nil {
		return false, err
	}
	stampClaim(u)
	_, err = s.res.update(ctx, NameResource, u)
	switch {
	case err == nil:
		klog.V(2).InfoS("Took over the name claim of a missing volume", "name", name, "volume", id, "previous", c.Spec.VolumeID)
		return true, nil
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return false, nil
	}
	return false, storeErr(err)
}

// dropUnclaimed deletes a TriremeVolume that lost the race for its name.
// Failing leaves an object no read sees, which CollectGarbage deletes.
func (s *Store) dropUnclaimed(u *unstructured.Unstructured) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := s.res.delete(ctx, VolumeResource, u.GetName(), u.GetResourceVersion()); err != nil {
		klog.InfoS("Could not delete a volume object whose name was taken; reads ignore it",
			"object", u.GetName(), "err", err)
	}
}

// GetVolume implements store.Store.
func (s *Store) GetVolume(ctx context.Context, id string) (store.Volume, error) {
	v, _, err := s.getLive(ctx, id)
	if err != nil {
		return store.Volume{}, fmt.Errorf("get volume %s: %w", id, err)
	}
	return v, nil
}

// getLive returns the volume with the id, and its object's
// resourceVersion, if the claim of its name names it.
func (s *Store) getLive(ctx context.Context, id string) (store.Volume, string, error) {
	if err := s.begin(ctx); err != nil {
		return store.Volume{}, "", err
	}
	u, err := s.res.get(ctx, VolumeResource, objectName(id))
	if err != nil {
		return store.Volume{}, "", storeErr(err)
	}
	v, err := s.decodeVolume(u, id)
	if err != nil {
		return store.Volume{}, "", err
	}
	owner, err := s.claimOwner(ctx, v.Name)
	if err != nil {
		return store.Volume{}, "", err
	}
	if owner != id {
		return store.Volume{}, "", fmt.Errorf("%w: its name is not claimed for it", store.ErrNotFound)
	}
	return v, u.GetResourceVersion(), nil
}

// claimOwner returns the id the claim of name points at; ErrNotFound if
// there is no claim.
func (s *Store) claimOwner(ctx context.Context, name string) (string, error) {
	u, err := s.res.get(ctx, NameResource, objectName(name))
	if err != nil {
		return "", storeErr(err)
	}
	var c nameObject
	if err := fromUnstructured(u, &c); err != nil {
		return "", err
	}
	if c.Spec.Name != name {
		return "", fmt.Errorf("%w: claim %s holds name %q, want %q", ErrCorrupt, u.GetName(), c.Spec.Name, name)
	}
	return c.Spec.VolumeID, nil
}

// volumeObject reads the TriremeVolume of the id, claimed or not.
func (s *Store) volumeObject(ctx context.Context, id string) (store.Volume, error) {
	u, err := s.res.get(ctx, VolumeResource, objectName(id))
	if err != nil {
		return store.Volume{}, storeErr(err)
	}
	return s.decodeVolume(u, id)
}

// decodeVolume decodes u and checks that it is the volume with the id.
func (s *Store) decodeVolume(u *unstructured.Unstructured, id string) (store.Volume, error) {
	var o volumeObject
	if err := fromUnstructured(u, &o); err != nil {
		return store.Volume{}, err
	}
	v, err := decodeVolume(o)
	if err != nil {
		return store.Volume{}, fmt.Errorf("object %s: %w", u.GetName(), err)
	}
	if v.ID != id {
		return store.Volume{}, fmt.Errorf("%w: object %s holds volume %s, want %s", ErrCorrupt, u.GetName(), v.ID, id)
	}
	return v, nil
}

// GetVolumeByName implements store.Store.
func (s *Store) GetVolumeByName(ctx context.Context, name string) (store.Volume, error) {
	v, err := s.getByName(ctx, name)
	if err != nil {
		return store.Volume{}, fmt.Errorf("get volume named %q: %w", name, err)
	}
	return v, nil
}

func (s *Store) getByName(ctx context.Context, name string) (store.Volume, error) {
	if err := s.begin(ctx); err != nil {
		return store.Volume{}, err
	}
	id, err := s.claimOwner(ctx, name)
	if err != nil {
		return store.Volume{}, err
	}
	v, err := s.volumeObject(ctx, id)
	if err != nil {
		return store.Volume{}, err
	}
	if v.Name != name {
		return store.Volume{}, fmt.Errorf("%w: the claim is left from deleted volume %s", store.ErrNotFound, id)
	}
	return v, nil
}

// ListVolumes implements store.Store.
func (s *Store) ListVolumes(ctx context.Context, opts store.ListOptions) (store.VolumePage, error) {
	if opts.Limit < 0 {
		return store.VolumePage{}, fmt.Errorf("list volumes: %w: limit %d is negative", store.ErrInvalid, opts.Limit)
	}
	vols, err := s.liveVolumes(ctx)
	if err != nil {
		return store.VolumePage{}, fmt.Errorf("list volumes after %q: %w", opts.StartAfter, err)
	}
	start, _ := slices.BinarySearchFunc(vols, opts.StartAfter, func(v store.Volume, id string) int {
		return strings.Compare(v.ID, id)
	})
	if start < len(vols) && vols[start].ID == opts.StartAfter {
		start++
	}
	page := store.VolumePage{Volumes: vols[start:]}
	if opts.Limit > 0 && len(page.Volumes) > opts.Limit {
		page.Volumes = page.Volumes[:opts.Limit]
		page.Next = page.Volumes[opts.Limit-1].ID
	}
	if len(page.Volumes) == 0 {
		page.Volumes = nil
	}
	return page, nil
}

// liveVolumes returns every volume whose name is claimed for it, in
// ascending byte order of ids. Claims are listed after the volumes: a
// volume created meanwhile may be missed, which a list may do, but one
// that exists throughout has its claim throughout.
func (s *Store) liveVolumes(ctx context.Context) ([]store.Volume, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	objs, err := s.res.list(ctx, VolumeResource, 0)
	if err != nil {
		return nil, storeErr(err)
	}
	owners, err := s.claimOwners(ctx)
	if err != nil {
		return nil, err
	}
	var vols []store.Volume
	for i := range objs {
		var o volumeObject
		if err := fromUnstructured(&objs[i], &o); err != nil {
			return nil, err
		}
		v, err := decodeVolume(o)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", objs[i].GetName(), err)
		}
		if owners[v.Name] == v.ID && objectName(v.ID) == objs[i].GetName() {
			vols = append(vols, v)
		}
	}
	slices.SortFunc(vols, func(a, b store.Volume) int { return strings.Compare(a.ID, b.ID) })
	return vols, nil
}

// claimOwners maps every claimed name to its volume id.
func (s *Store) claimOwners(ctx context.Context) (map[string]string, error) {
	claims, err := s.res.list(ctx, NameResource, 0)
	if err != nil {
		return nil, storeErr(err)
	}
	owners := make(map[string]string, len(claims))
	for i := range claims {
		var c nameObject
		if err := fromUnstructured(&claims[i], &c); err != nil {
			return nil, err
		}
		owners[c.Spec.Name] = c.Spec.VolumeID
	}
	return owners, nil
}

// UpdateVolume implements store.Store.
func (s *Store) UpdateVolume(ctx context.Context, v store.Volume) (store.Volume, error) {
	out, err := s.updateVolume(ctx, v)
	if err != nil {
		return store.Volume{}, fmt.Errorf("update volume %s: %w", v.ID, err)
	}
	return out, nil
}

func (s *Store) updateVolume(ctx context.Context, v store.Volume) (store.Volume, error) {
	if err := v.Validate(); err != nil {
		return store.Volume{}, err
	}
	for {
		stored, rv, err := s.getLive(ctx, v.ID)
		if err != nil {
			return store.Volume{}, err
		}
		if err := checkRevision(stored.Revision, v.Revision); err != nil {
			return store.Volume{}, err
		}
		if err := store.ValidateUpdate(stored, v); err != nil {
			return store.Volume{}, err
		}
		next := v
		next.Revision++
		obj := encodeVolume(next)
		u, err := toUnstructured(VolumeKind, objectName(v.ID), rv, &obj)
		if err != nil {
			return store.Volume{}, err
		}
		out, err := s.res.update(ctx, VolumeResource, u)
		if apierrors.IsConflict(err) {
			continue // written meanwhile: compare the revisions again
		}
		if err != nil {
			return store.Volume{}, storeErr(err)
		}
		return s.decodeVolume(out, v.ID)
	}
}

// DeleteVolume implements store.Store. It deletes the TriremeVolume, then
// the claim of its name if the claim still names it.
func (s *Store) DeleteVolume(ctx context.Context, id string, revision uint64) error {
	if err := s.deleteVolume(ctx, id, revision); err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	return nil
}

func (s *Store) deleteVolume(ctx context.Context, id string, revision uint64) error {
	for {
		stored, rv, err := s.getLive(ctx, id)
		if err != nil {
			return err
		}
		if err := checkRevision(stored.Revision, revision); err != nil {
			return err
		}
		err = s.res.delete(ctx, VolumeResource, objectName(id), rv)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return storeErr(err)
		}
		s.releaseName(ctx, stored.Name, id)
		return nil
	}
}

// releaseName deletes the claim of name if it names id. Failing leaves a
// claim that the next create of the name takes over.
func (s *Store) releaseName(ctx context.Context, name, id string) {
	u, err := s.res.get(ctx, NameResource, objectName(name))
	if err == nil {
		var c nameObject
		if err = fromUnstructured(u, &c); err == nil && c.Spec.VolumeID == id {
			err = s.res.delete(ctx, NameResource, u.GetName(), u.GetResourceVersion())
		}
	}
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		klog.V(2).InfoS("Could not delete the name claim of a deleted volume; the next create of the name takes it over",
			"volume", id, "err", err)
	}
}
