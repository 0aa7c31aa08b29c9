package store

import (
	"context"
	"errors"
	"time"
)

// Errors that every backend returns, wrapped with context. Callers compare
// them with errors.Is.
var (
	// ErrNotFound means no record has the id or name asked for.
	ErrNotFound = errors.New("not found")
	// ErrExists means a record with the id, or a volume with the name,
	// already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict means the record's stored revision differs from the
	// revision the write was based on: read it again and retry.
	ErrConflict = errors.New("revision conflict")
	// ErrInvalid means the record breaks a rule of Validate or
	// ValidateUpdate, or a request's options are out of range.
	ErrInvalid = errors.New("invalid")
)

// Store holds volume and node records. All methods are safe for
// concurrent use, and each one is atomic: it either takes full effect or
// none. Records are copied in and out: a caller may change a value it
// passed or got back without touching the stored record.
//
// Records read back equal the records written, except that Revision is
// the store's, times are in UTC (every backend keeps at least
// microseconds), and empty maps and slices come back nil.
//
// Every write is durable when it returns. Reads see every write that
// returned before they started. Methods return the context's error,
// wrapped, if ctx is done before they start.
//
// Revisions: a record written by CreateVolume or PutNode gets Revision 1,
// and each later successful write adds one. A read returns the revision of
// the stored record, and a write succeeds only if the caller's Revision
// equals it.
type Store interface {
	// CreateVolume stores a new volume. It fails with ErrInvalid unless
	// v.Validate passes and v.Revision is 0, and with ErrExists if a
	// volume has v.ID or v.Name, checked and claimed in one atomic step:
	// of concurrent creators of one name, exactly one succeeds. It
	// returns the record as GetVolume would.
	CreateVolume(ctx context.Context, v Volume) (Volume, error)

	// GetVolume returns the volume with the id, or ErrNotFound.
	GetVolume(ctx context.Context, id string) (Volume, error)

	// GetVolumeByName returns the volume with the name, or ErrNotFound.
	GetVolumeByName(ctx context.Context, name string) (Volume, error)

	// ListVolumes returns volumes in ascending byte order of their ids,
	// starting after opts.StartAfter. See VolumePage for how to page.
	ListVolumes(ctx context.Context, opts ListOptions) (VolumePage, error)

	// UpdateVolume replaces the volume with id v.ID if its stored
	// revision equals v.Revision, and returns the record as GetVolume
	// would, with the revision one higher. It fails with ErrNotFound if
	// the volume is gone, ErrConflict if the revision is stale, and
	// ErrInvalid if v.Validate or ValidateUpdate refuses it.
	UpdateVolume(ctx context.Context, v Volume) (Volume, error)

	// DeleteVolume removes the volume and frees its name if the stored
	// revision equals revision. It fails with ErrNotFound if no volume
	// has the id and ErrConflict if the revision is stale.
	DeleteVolume(ctx context.Context, id string, revision uint64) error

	// PutNode creates the node if n.Revision is 0 (ErrExists if it
	// exists), and otherwise replaces it if its stored revision equals
	// n.Revision (ErrNotFound if it is gone, ErrConflict if stale). It
	// fails with ErrInvalid unless n.Validate passes, and returns the
	// record as GetNode would.
	//
	// A node deleted and created again starts over at revision 1, so a
	// writer holding revision 1 of the old record can overwrite the new
	// one. Volumes do not have this problem: a new volume has a new id.
	PutNode(ctx context.Context, n Node) (Node, error)

	// GetNode returns the node with the id, or ErrNotFound.
	GetNode(ctx context.Context, id string) (Node, error)

	// ListNodes returns every node in ascending byte order of their ids.
	ListNodes(ctx context.Context) ([]Node, error)

	// DeleteNode removes the node if its stored revision equals revision.
	// It fails with ErrNotFound if no node has the id and ErrConflict if
	// the revision is stale. Volumes that place replicas on the node are
	// not touched.
	DeleteNode(ctx context.Context, id string, revision uint64) error

	// Close releases the store. Methods called after Close fail.
	Close() error
}

// Collector is implemented by a backend whose interrupted creates and
// deletes can leave objects behind that no read sees. The controller
// calls CollectGarbage now and then; it deletes such objects once they
// are older than minAge, and returns how many it deleted.
type Collector interface {
	CollectGarbage(ctx context.Context, minAge time.Duration) (int, error)
}

// ListOptions selects one page of ListVolumes.
type ListOptions struct {
	// StartAfter is an id or a VolumePage.Next token: the page starts at
	// the first volume whose id sorts after it. Empty starts at the first
	// volume. It need not name an existing volume, so a token stays valid
	// when the volume it names is deleted.
	StartAfter string
	// Limit caps the number of volumes returned; 0 means no cap. A
	// negative Limit is ErrInvalid.
	Limit int
}

// VolumePage is one page of ListVolumes.
type VolumePage struct {
	// Volumes are in ascending byte order of their ids.
	Volumes []Volume
	// Next is the StartAfter of the next page, or empty if no volume
	// sorts after the last one returned. It is the last returned id.
	// Volumes created or deleted between pages may or may not show up,
	// but no volume that exists throughout is skipped or repeated.
	Next string
}
