package bolt

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/trireme-csi/trireme/pkg/store"
	"github.com/trireme-csi/trireme/pkg/store/storetest"
)

func openTemp(t *testing.T) store.Store {
	t.Helper()
	return openAt(t, filepath.Join(t.TempDir(), "trireme.db"))
}

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func reopen(t *testing.T, s store.Store) store.Store {
	t.Helper()
	path := s.(*Store).db.Path()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openAt(t, path)
}

func TestContract(t *testing.T) {
	storetest.Run(t, openTemp, storetest.WithReopen(reopen))
}

func TestSecondOpenFailsWithErrLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trireme.db")
	openAt(t, path)

	start := time.Now()
	_, err := Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: error %v, want %v", err, ErrLocked)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond || waited > 2*time.Second {
		t.Errorf("second Open gave up after %v, want about 200ms", waited)
	}
}

func TestOpenAfterCloseSucceeds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trireme.db")
	s := openAt(t, path)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	openAt(t, path)
}

func TestOpenWithoutDirectoryFails(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "missing", "trireme.db"), Options{})
	if err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
}

func TestOpenRefusesUnknownSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trireme.db")
	writeRaw(t, path, bucketMeta, keySchema, []byte("2"))

	_, err := Open(path, Options{})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open: error %v, want %v", err, ErrCorrupt)
	}
}

func TestCorruptRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trireme.db")
	s := openAt(t, path)
	s.Close()
	writeRaw(t, path, bucketVolumes, []byte("vol-bad"), []byte(`{"version":1,"id":"vol-bad"`))
	writeRaw(t, path, bucketNames, []byte("dangling"), []byte("vol-gone"))
	writeRaw(t, path, bucketNodes, []byte("node-bad"), []byte(`{"version":9,"id":"node-bad"}`))
	s = openAt(t, path)
	ctx := t.Context()

	_, err := s.GetVolume(ctx, "vol-bad")
	wantCorrupt(t, "GetVolume", err)
	_, err = s.GetVolumeByName(ctx, "dangling")
	wantCorrupt(t, "GetVolumeByName", err)
	_, err = s.ListVolumes(ctx, store.ListOptions{})
	wantCorrupt(t, "ListVolumes", err)
	_, err = s.GetNode(ctx, "node-bad")
	wantCorrupt(t, "GetNode", err)
	_, err = s.ListNodes(ctx)
	wantCorrupt(t, "ListNodes", err)
}

func wantCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		t.Errorf("%s: error %v, want %v alone", what, err, ErrCorrupt)
	}
}

// writeRaw puts one key into a bucket of the file, bypassing Store.
func writeRaw(t *testing.T, path string, bucket, key, value []byte) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatalf("bbolt.Open: %v", err)
	}
	defer db.Close()
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(key, value)
	})
	if err != nil {
		t.Fatalf("write %s/%s: %v", bucket, key, err)
	}
}

func TestWritesAreSynced(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "trireme.db"))
	if s.db.NoSync || s.db.NoGrowSync {
		t.Errorf("NoSync %v, NoGrowSync %v: commits would not be durable", s.db.NoSync, s.db.NoGrowSync)
	}
}
