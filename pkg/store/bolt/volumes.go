package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/trireme-csi/trireme/pkg/store"
)

// CreateVolume implements store.Store. The id and the name are checked
// and claimed in one write transaction.
func (s *Store) CreateVolume(ctx context.Context, v store.Volume) (store.Volume, error) {
	b, err := encodeNewVolume(v)
	if err != nil {
		return store.Volume{}, fmt.Errorf("create volume %s: %w", v.ID, err)
	}
	err = s.update(ctx, func(tx *bbolt.Tx) error {
		return putNewVolume(tx, v.ID, v.Name, b)
	})
	if err != nil {
		return store.Volume{}, fmt.Errorf("create volume %s named %q: %w", v.ID, v.Name, err)
	}
	return decodeVolume(b)
}

func encodeNewVolume(v store.Volume) ([]byte, error) {
	if v.Revision != 0 {
		return nil, fmt.Errorf("%w: revision %d, want 0 for a new volume", store.ErrInvalid, v.Revision)
	}
	if err := v.Validate(); err != nil {
		return nil, err
	}
	v.Revision = 1
	return encodeVolume(v)
}

func putNewVolume(tx *bbolt.Tx, id, name string, b []byte) error {
	vols, names := tx.Bucket(bucketVolumes), tx.Bucket(bucketNames)
	if vols.Get([]byte(id)) != nil {
		return fmt.Errorf("%w: id is taken", store.ErrExists)
	}
	if owner := names.Get([]byte(name)); owner != nil {
		return fmt.Errorf("%w: name is taken by volume %s", store.ErrExists, owner)
	}
	if err := vols.Put([]byte(id), b); err != nil {
		return err
	}
	return names.Put([]byte(name), []byte(id))
}

// GetVolume implements store.Store.
func (s *Store) GetVolume(ctx context.Context, id string) (store.Volume, error) {
	var v store.Volume
	err := s.view(ctx, func(tx *bbolt.Tx) (err error) {
		v, err = getVolume(tx, id)
		return err
	})
	if err != nil {
		return store.Volume{}, fmt.Errorf("get volume %s: %w", id, err)
	}
	return v, nil
}

// GetVolumeByName implements store.Store.
func (s *Store) GetVolumeByName(ctx context.Context, name string) (store.Volume, error) {
	var v store.Volume
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		id := tx.Bucket(bucketNames).Get([]byte(name))
		if id == nil {
			return store.ErrNotFound
		}
		var err error
		if v, err = getVolume(tx, string(id)); err != nil {
			return fmt.Errorf("%w: name index points at volume %s: %v", ErrCorrupt, id, err)
		}
		return nil
	})
	if err != nil {
		return store.Volume{}, fmt.Errorf("get volume named %q: %w", name, err)
	}
	return v, nil
}

func getVolume(tx *bbolt.Tx, id string) (store.Volume, error) {
	b := tx.Bucket(bucketVolumes).Get([]byte(id))
	if b == nil {
		return store.Volume{}, store.ErrNotFound
	}
	return decodeVolume(b)
}

// ListVolumes implements store.Store.
func (s *Store) ListVolumes(ctx context.Context, opts store.ListOptions) (store.VolumePage, error) {
	if opts.Limit < 0 {
		return store.VolumePage{}, fmt.Errorf("list volumes: %w: limit %d is negative", store.ErrInvalid, opts.Limit)
	}
	var page store.VolumePage
	err := s.view(ctx, func(tx *bbolt.Tx) (err error) {
		page, err = listVolumes(tx, opts)
		return err
	})
	if err != nil {
		return store.VolumePage{}, fmt.Errorf("list volumes after %q: %w", opts.StartAfter, err)
	}
	return page, nil
}

func listVolumes(tx *bbolt.Tx, opts store.ListOptions) (store.VolumePage, error) {
	var page store.VolumePage
	c := tx.Bucket(bucketVolumes).Cursor()
	k, b := c.Seek([]byte(opts.StartAfter))
	if k != nil && string(k) == opts.StartAfter {
		k, b = c.Next()
	}
	for ; k != nil; k, b = c.Next() {
		if opts.Limit > 0 && len(page.Volumes) == opts.Limit {
			page.Next = page.Volumes[len(page.Volumes)-1].ID
			break
		}
		v, err := decodeVolume(b)
		if err != nil {
			return store.VolumePage{}, fmt.Errorf("volume %s: %w", k, err)
		}
		page.Volumes = append(page.Volumes, v)
	}
	return page, nil
}

// UpdateVolume implements store.Store.
func (s *Store) UpdateVolume(ctx context.Context, v store.Volume) (store.Volume, error) {
	if err := v.Validate(); err != nil {
		return store.Volume{}, fmt.Errorf("update volume %s: %w", v.ID, err)
	}
	var out []byte
	err := s.update(ctx, func(tx *bbolt.Tx) (err error) {
		out, err = replaceVolume(tx, v)
		return err
	})
	if err != nil {
		return store.Volume{}, fmt.Errorf("update volume %s: %w", v.ID, err)
	}
	return decodeVolume(out)
}

// replaceVolume writes v over the stored volume if the revisions match,
// and returns what it wrote.
func replaceVolume(tx *bbolt.Tx, v store.Volume) ([]byte, error) {
	stored, err := getVolume(tx, v.ID)
	if err != nil {
		return nil, err
	}
	if err := checkRevision(stored.Revision, v.Revision); err != nil {
		return nil, err
	}
	if err := store.ValidateUpdate(stored, v); err != nil {
		return nil, err
	}
	v.Revision++
	b, err := encodeVolume(v)
	if err != nil {
		return nil, err
	}
	return b, tx.Bucket(bucketVolumes).Put([]byte(v.ID), b)
}

// DeleteVolume implements store.Store.
func (s *Store) DeleteVolume(ctx context.Context, id string, revision uint64) error {
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		stored, err := getVolume(tx, id)
		if err != nil {
			return err
		}
		if err := checkRevision(stored.Revision, revision); err != nil {
			return err
		}
		return deleteVolume(tx, stored)
	})
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", id, err)
	}
	return nil
}

func deleteVolume(tx *bbolt.Tx, v store.Volume) error {
	if err := tx.Bucket(bucketVolumes).Delete([]byte(v.ID)); err != nil {
		return err
	}
	names := tx.Bucket(bucketNames)
	if string(names.Get([]byte(v.Name))) != v.ID {
		return nil
	}
	return names.Delete([]byte(v.Name))
}
