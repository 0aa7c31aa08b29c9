// Package bolt is the embedded backend of package store: every record in
// one bbolt file, for the standalone controller and local clusters.
//
// The file has four buckets: volumes (id to record), volume-names (name
// to id), nodes (id to record) and meta (the schema version). Records are
// versioned JSON (see codec.go). Each write is one bbolt transaction,
// synced to disk before it returns; bbolt runs one write transaction at a
// time, which is what makes the compare-and-swap and the name claim
// atomic.
//
// Only one process may open the file at a time: bbolt holds an exclusive
// lock on it, and Open gives up after Options.LockTimeout with ErrLocked.
package bolt

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/trireme-csi/trireme/pkg/store"
)

// DefaultLockTimeout is how long Open waits for the file lock when
// Options.LockTimeout is zero.
const DefaultLockTimeout = 5 * time.Second

// schemaVersion is the layout of buckets that this build reads and writes.
const schemaVersion = 1

var (
	bucketVolumes = []byte("volumes")
	bucketNames   = []byte("volume-names")
	bucketNodes   = []byte("nodes")
	bucketMeta    = []byte("meta")
	keySchema     = []byte("schema")
)

var (
	// ErrLocked means another process holds the store file open: most
	// likely a second controller pointed at the same file.
	ErrLocked = errors.New("store file is locked by another process")
	// ErrCorrupt means the file holds something this build cannot read:
	// an undecodable record, a dangling index entry, or an unknown schema.
	ErrCorrupt = errors.New("store file is corrupt or from a newer version")
)

// Options tunes Open.
type Options struct {
	// LockTimeout is how long Open waits for another process to release
	// the file; 0 means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Store is a store.Store kept in one bbolt file.
type Store struct {
	db *bbolt.DB
}

var _ store.Store = (*Store)(nil)

// Open opens the store file at path, creating it (but not its directory)
// if it does not exist. It fails with ErrLocked if another process keeps
// the file open for longer than the lock timeout.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.LockTimeout
	if timeout == 0 {
		timeout = DefaultLockTimeout
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w (waited %v; is another controller using it?)", path, ErrLocked, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// initSchema creates the buckets of a new file, and checks the schema
// version of an existing one.
func initSchema(tx *bbolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	if v := meta.Get(keySchema); v != nil && string(v) != strconv.Itoa(schemaVersion) {
		return fmt.Errorf("%w: schema version %q, this build reads %d", ErrCorrupt, v, schemaVersion)
	}
	for _, name := range [][]byte{bucketVolumes, bucketNames, bucketNodes} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	return meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion)))
}

// Close closes the file and releases its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.db.Path(), err)
	}
	return nil
}

func (s *Store) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

func (s *Store) update(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

// checkRevision compares the revision a write was based on with the
// stored one.
func checkRevision(stored, want uint64) error {
	if stored != want {
		return fmt.Errorf("%w: stored revision %d, write based on %d", store.ErrConflict, stored, want)
	}
	return nil
}
