package store

import (
	"context"
	"errors"
	"fmt"
)

// Mutate reads the volume, lets mutate change it, and writes it back with
// UpdateVolume. When the write conflicts it reads the volume again and
// calls mutate again, so mutate must decide from the volume it is given
// alone. An error from mutate stops Mutate with nothing written. Changes
// mutate makes to ID or Revision are ignored. It returns the stored
// volume.
func Mutate(ctx context.Context, s Store, id string, mutate func(*Volume) error) (Volume, error) {
	return retryUpdate(ctx, s, id, mutate)
}

// BumpEpoch is Mutate that also sets Layout.Epoch to one more than the
// epoch it read, whatever mutate set it to. Since the write is a
// compare-and-swap on the revision, and the store never lets the epoch go
// down, each call that succeeds gets an epoch no other call got, and
// concurrent calls get consecutive epochs. Use it for every membership or
// primary change (invariant I3).
func BumpEpoch(ctx context.Context, s Store, id string, mutate func(*Volume) error) (Volume, error) {
	return retryUpdate(ctx, s, id, func(v *Volume) error {
		epoch := v.Layout.Epoch
		if err := mutate(v); err != nil {
			return err
		}
		v.Layout.Epoch = epoch + 1
		return nil
	})
}

func retryUpdate(ctx context.Context, s Store, id string, mutate func(*Volume) error) (Volume, error) {
	for {
		cur, err := s.GetVolume(ctx, id)
		if err != nil {
			return Volume{}, err
		}
		rev := cur.Revision
		if err := mutate(&cur); err != nil {
			return Volume{}, fmt.Errorf("update volume %s: %w", id, err)
		}
		cur.ID, cur.Revision = id, rev
		out, err := s.UpdateVolume(ctx, cur)
		if !errors.Is(err, ErrConflict) {
			return out, err
		}
	}
}
