package agent

import "errors"

// Errors returned by the agent. The Node service turns each into one gRPC
// status code (see codeOf).
var (
	// ErrInvalidConfig means New was given an unusable Config.
	ErrInvalidConfig = errors.New("invalid agent configuration")
	// ErrDataDirLocked means another agent is using the data directory.
	ErrDataDirLocked = errors.New("data directory is in use by another agent")
	// ErrNotFound means this node holds no replica of the volume.
	ErrNotFound = errors.New("no local replica of the volume")
	// ErrBusy means another operation on the same volume is in progress.
	ErrBusy = errors.New("another operation on the volume is in progress")
	// ErrShuttingDown means the agent is stopping and takes no new work.
	ErrShuttingDown = errors.New("node agent is shutting down")
	// ErrNoLocalReplica means a layout names this node primary, but the
	// node holds no replica to serve from.
	ErrNoLocalReplica = errors.New("layout names this node primary but it holds no replica")
	// ErrStaleLayout means a layout is older than one this node knows of,
	// or than the epoch its replica has seen.
	ErrStaleLayout = errors.New("stale layout")
	// ErrLayoutConflict means a layout has the epoch of the recorded one
	// but different content: two layouts cannot share an epoch.
	ErrLayoutConflict = errors.New("different layout with the same epoch")
	// ErrBadControllerReply means the controller answered a report with a
	// layout the agent cannot use.
	ErrBadControllerReply = errors.New("unusable layout from the controller")
)
