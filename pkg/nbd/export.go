// Package nbd implements the server side of the Network Block Device
// protocol (fixed newstyle negotiation, simple replies, NBD_OPT_STARTTLS),
// so that standard clients such as qemu-io, qemu-img, nbdinfo, nbdcopy and
// fio's nbd engine can read and write Trireme volumes.
package nbd

import "context"

// Export is one block device served over NBD. Implementations must be safe
// for concurrent use: the server issues many requests at once. Offsets and
// lengths passed in are already checked against Size.
type Export interface {
	// Size returns the export size in bytes. The size may grow while
	// clients are connected (online expansion), never shrink. The server
	// reads it before checking each request, from many connections at
	// once, so it must be cheap (an atomic load, no I/O) and safe for
	// concurrent use.
	Size() int64
	// ReadAt fills p from offset off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at offset off. With fua set the data is on stable
	// storage when WriteAt returns.
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush returns once every write completed before it is on stable
	// storage.
	Flush(ctx context.Context) error
	// Trim discards the range; later reads return zeroes.
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes makes the range read as zeroes.
	WriteZeroes(ctx context.Context, off, length int64, fua bool) error
}

// Exports resolves export names for a server.
type Exports interface {
	// Lookup returns the export with the given name. An error wrapping
	// ErrPolicy refuses the client (NBD_REP_ERR_POLICY); any other error
	// means there is no such export (NBD_REP_ERR_UNKNOWN).
	Lookup(name string) (Export, error)
	// List returns the names of the exports a client may see.
	List() []string
}
