// Package blockstore keeps one replica's data on the local disk: a sparse
// file holding the volume's bytes and a small checksummed metadata file.
//
// Writes land in the page cache; Sync makes every completed write durable
// with fdatasync. Trim and zeroing punch holes, so unwritten and discarded
// regions cost no disk space.
package blockstore

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	dataFile = "data"
	metaFile = "meta"
)

var (
	// ErrStaleEpoch means a request carried an epoch lower than the
	// highest this replica has seen: it comes from a deposed primary.
	ErrStaleEpoch = errors.New("stale epoch")
	// ErrOutOfRange means an access reaches past the end of the volume.
	ErrOutOfRange = errors.New("access beyond end of volume")
	// ErrExists means Create found a replica of another volume or size.
	ErrExists = errors.New("replica exists with different identity")
	// ErrShrink means Grow was asked for a smaller size.
	ErrShrink = errors.New("a replica cannot shrink")
	// ErrNotFound means Open found no replica in the directory.
	ErrNotFound = errors.New("replica not found")
)

// Replica is one volume's data on this node. It is safe for concurrent
// use. Writes made through Apply hold the metadata lock shared, so a
// raise of the epoch waits for them and no write of an older epoch can
// land after it.
type Replica struct {
	dir  string
	file *os.File
	size atomic.Int64 // the bytes accesses may reach; grows, never shrinks

	directMu sync.Mutex
	direct   *os.File // the data file opened with O_DIRECT, once WriteAtDirect needs it
	noDirect bool     // the filesystem refused O_DIRECT: WriteAtDirect writes through the page cache
	closed   bool

	mu   sync.RWMutex // guards meta; held shared by Apply, exclusive to change meta
	meta Meta
}

// Create makes a new, empty replica in dir, or opens the one already there
// when it has the same volume id and size (Create is idempotent).
func Create(dir, volumeID string, size int64) (*Replica, error) {
	if size <= 0 {
		return nil, fmt.Errorf("create replica %s: size %d must be positive", volumeID, size)
	}
	r, err := Open(dir)
	if err == nil {
		if r.meta.VolumeID != volumeID || r.Size() != size {
			r.Close()
			return nil, fmt.Errorf("create replica %s in %s: %w (volume %s, size %d)",
				volumeID, dir, ErrExists, r.meta.VolumeID, r.Size())
		}
		return r, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return create(dir, Meta{VolumeID: volumeID, Size: size, Incarnation: newIncarnation()})
}

func create(dir string, m Meta) (*Replica, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create replica %s: %w", m.VolumeID, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, dataFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create replica %s: %w", m.VolumeID, err)
	}
	if err := f.Truncate(m.Size); err != nil {
		f.Close()
		return nil, fmt.Errorf("create replica %s: size data file: %w", m.VolumeID, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("create replica %s: %w", m.VolumeID, err)
	}
	// The metadata file is written last: a replica without one is an
	// unfinished create and Open reports it as not found.
	if err := writeMetaFile(filepath.Join(dir, metaFile), m); err != nil {
		f.Close()
		return nil, fmt.Errorf("create replica %s: write metadata: %w", m.VolumeID, err)
	}
	return openedReplica(dir, f, m), nil
}

func openedReplica(dir string, f *os.File, m Meta) *Replica {
	r := &Replica{dir: dir, file: f, meta: m}
	r.size.Store(m.Size)
	return r
}

// Open opens the replica stored in dir.
func Open(dir string) (*Replica, error) {
	m, err := readMetaFile(filepath.Join(dir, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("open replica in %s: %w", dir, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open replica in %s: %w", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, dataFile), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open replica %s: %w", m.VolumeID, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open replica %s: %w", m.VolumeID, err)
	}
	// A data file longer than the metadata says is a Grow that stopped
	// before it recorded the size: the bytes past it were never written.
	if fi.Size() < m.Size {
		f.Close()
		return nil, fmt.Errorf("open replica %s: data file is %d bytes, metadata says %d: %w",
			m.VolumeID, fi.Size(), m.Size, ErrCorruptMeta)
	}
	return openedReplica(dir, f, m), nil
}

// Remove deletes the replica stored in dir. Removing a missing replica is
// not an error.
func Remove(dir string) error {
	return os.RemoveAll(dir)
}

// Size returns the volume size in bytes.
func (r *Replica) Size() int64 { return r.size.Load() }

// Grow makes the replica size bytes long; the new range reads as zeroes.
// The longer data file is made durable before the metadata records the
// size, so a crash in between leaves the old size (see Open). Growing to
// the current size does nothing; shrinking is ErrShrink.
func (r *Replica) Grow(size int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.Size()
	switch {
	case size == cur:
		return nil
	case size < cur:
		return fmt.Errorf("grow replica %s to %d bytes: %w (it holds %d)", r.meta.VolumeID, size, ErrShrink, cur)
	}
	if err := r.file.Truncate(size); err != nil {
		return fmt.Errorf("grow replica %s to %d bytes: %w", r.meta.VolumeID, size, err)
	}
	if err := r.file.Sync(); err != nil {
		return fmt.Errorf("grow replica %s to %d bytes: %w", r.meta.VolumeID, size, err)
	}
	m := r.meta
	m.Size = size
	if err := r.persistLocked(m); err != nil {
		return fmt.Errorf("grow replica %s: %w", m.VolumeID, err)
	}
	r.size.Store(size)
	return nil
}

// Dir returns the directory holding the replica.
func (r *Replica) Dir() string { return r.dir }

// DataPath returns the path of the sparse data file.
func (r *Replica) DataPath() string { return filepath.Join(r.dir, dataFile) }

// Meta returns a copy of the replica's metadata.
func (r *Replica) Meta() Meta {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.meta
}

// Epoch returns the highest epoch this replica has seen.
func (r *Replica) Epoch() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.meta.Epoch
}

// Apply runs fn, a change to the data, on behalf of a request carrying
// epoch. A higher epoch is persisted first; a lower one is refused with
// ErrStaleEpoch and fn does not run. The check and fn happen under one
// shared lock, so once ObserveEpoch has raised the epoch no request of an
// older epoch can still change the data.
func (r *Replica) Apply(epoch uint64, fn func() error) error {
	if err := r.holdEpoch(epoch); err != nil {
		return err
	}
	defer r.mu.RUnlock()
	return fn()
}

// holdEpoch returns with the metadata lock held shared and the replica at
// epoch, raising it first if epoch is higher, or refuses a stale epoch.
func (r *Replica) holdEpoch(epoch uint64) error {
	for {
		r.mu.RLock()
		cur := r.meta.Epoch
		if epoch == cur {
			return nil
		}
		r.mu.RUnlock()
		if epoch < cur {
			return fmt.Errorf("epoch %d, replica has seen %d: %w", epoch, cur, ErrStaleEpoch)
		}
		if err := r.ObserveEpoch(epoch); err != nil {
			return err
		}
	}
}

func (r *Replica) check(off, length int64) error { return CheckRange(off, length, r.Size()) }

// CheckRange returns ErrOutOfRange, wrapped, unless [off, off+length)
// lies within a volume of size bytes.
func CheckRange(off, length, size int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return fmt.Errorf("offset %d length %d on %d-byte volume: %w", off, length, size, ErrOutOfRange)
	}
	return nil
}

// ReadAt fills p with the bytes at off.
func (r *Replica) ReadAt(p []byte, off int64) error {
	if err := r.check(off, int64(len(p))); err != nil {
		return err
	}
	_, err := r.file.ReadAt(p, off)
	return err
}

// WriteAt writes p at off into the page cache. It is durable after the
// next Sync.
func (r *Replica) WriteAt(p []byte, off int64) error {
	if err := r.check(off, int64(len(p))); err != nil {
		return err
	}
	_, err := r.file.WriteAt(p, off)
	return err
}

// DirectAlign is the alignment of offset, length and memory with which
// WriteAtDirect bypasses the page cache. It is a multiple of the logical
// block size of every common disk.
const DirectAlign = 4096

// AlignedBuffer returns a zeroed buffer of n bytes whose memory starts at a
// multiple of DirectAlign.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+DirectAlign)
	skip := (DirectAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%DirectAlign)) % DirectAlign
	return b[skip : skip+n : skip+n]
}

// DirectAligned says whether WriteAtDirect can write p at off without the
// page cache.
func DirectAligned(p []byte, off int64) bool {
	return len(p) > 0 && off%DirectAlign == 0 && len(p)%DirectAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%DirectAlign == 0
}

// WriteAtDirect writes p at off like WriteAt, for bulk copies: when p and
// off are aligned (DirectAligned) the data goes straight to the disk
// (O_DIRECT), neither costing a copy into the page cache nor waiting
// behind its writeback. Otherwise, or where the filesystem refuses
// O_DIRECT, it is WriteAt. Either way the data is durable after the next
// Sync, which also flushes the disk's cache.
//
// The kernel keeps the two paths coherent: a direct write first writes
// back and drops the cached pages of its range, so buffered writes before
// and after it land in order.
func (r *Replica) WriteAtDirect(p []byte, off int64) error {
	if err := r.check(off, int64(len(p))); err != nil {
		return err
	}
	return r.writeDirect(p, off)
}

// writeDirect is WriteAtDirect past its range check.
func (r *Replica) writeDirect(p []byte, off int64) error {
	if DirectAligned(p, off) {
		if f := r.directFile(); f != nil {
			_, err := f.WriteAt(p, off)
			if !errors.Is(err, unix.EINVAL) {
				return err
			}
			// The device wants a larger alignment than DirectAlign:
			// nothing was written, and buffered writes serve from now on.
			r.directMu.Lock()
			r.noDirect = true
			r.directMu.Unlock()
		}
	}
	_, err := r.file.WriteAt(p, off)
	return err
}

// directFile returns the data file opened with O_DIRECT, or nil where the
// filesystem refuses it (tmpfs, some FUSE filesystems).
func (r *Replica) directFile() *os.File {
	r.directMu.Lock()
	defer r.directMu.Unlock()
	if r.noDirect || r.closed {
		return nil
	}
	if r.direct == nil {
		f, err := os.OpenFile(r.DataPath(), os.O_WRONLY|unix.O_DIRECT, 0)
		if err != nil {
			r.noDirect = true
			return nil
		}
		r.direct = f
	}
	return r.direct
}

// PunchHole deallocates the range; it reads back as zeroes. It serves both
// TRIM and WRITE_ZEROES. Partial blocks at the edges are zeroed by the
// filesystem.
func (r *Replica) PunchHole(off, length int64) error {
	if err := r.check(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	mode := uint32(unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE)
	err := r.withFd(func(fd int) error { return unix.Fallocate(fd, mode, off, length) })
	if err != nil {
		return fmt.Errorf("punch hole at %d+%d: %w", off, length, err)
	}
	return nil
}

// withFd runs fn on the data file's descriptor. The descriptor stays
// valid for the whole call even if Close runs meanwhile: a raw Fd() could
// be closed and reused by another file under fn.
func (r *Replica) withFd(fn func(fd int) error) error {
	rc, err := r.file.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	if err := rc.Control(func(fd uintptr) { opErr = fn(int(fd)) }); err != nil {
		return err
	}
	return opErr
}

// Sync makes every write completed before the call durable (fdatasync).
func (r *Replica) Sync() error {
	return r.withFd(unix.Fdatasync)
}

// NextData returns the start and end of the first allocated extent at or
// after off. At the end of the data it returns (size, size).
func (r *Replica) NextData(off int64) (start, end int64, err error) {
	err = r.withFd(func(fd int) error {
		var err error
		if start, err = unix.Seek(fd, off, unix.SEEK_DATA); err != nil {
			return err
		}
		end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
		return err
	})
	size := r.Size()
	if errors.Is(err, unix.ENXIO) {
		return size, size, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("seek data from %d: %w", off, err)
	}
	// The file may run past the size after an interrupted Grow.
	return min(start, size), min(end, size), nil
}

// ObserveEpoch records epoch as seen. It persists the epoch before
// returning when it is higher than any seen so far, and returns
// ErrStaleEpoch when it is lower.
func (r *Replica) ObserveEpoch(epoch uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case epoch < r.meta.Epoch:
		return fmt.Errorf("epoch %d, replica has seen %d: %w", epoch, r.meta.Epoch, ErrStaleEpoch)
	case epoch == r.meta.Epoch:
		return nil
	}
	m := r.meta
	m.Epoch = epoch
	return r.persistLocked(m)
}

// SetRebuilding records whether a background copy is under way. Clearing
// it first makes the data durable, so a replica marked complete really is.
func (r *Replica) SetRebuilding(rebuilding bool) error {
	if !rebuilding {
		if err := r.Sync(); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.meta.Rebuilding == rebuilding {
		return nil
	}
	m := r.meta
	m.Rebuilding = rebuilding
	return r.persistLocked(m)
}

func (r *Replica) persistLocked(m Meta) error {
	if err := writeMetaFile(filepath.Join(r.dir, metaFile), m); err != nil {
		return fmt.Errorf("persist metadata of %s: %w", m.VolumeID, err)
	}
	r.meta = m
	return nil
}

// HoleSum is what Checksum returns for a range without allocated data.
const HoleSum = 0

var crcTable = crc64.MakeTable(crc64.ECMA)

// Checksum digests the bytes of [off, off+n): HoleSum when the range holds
// no allocated data, else a CRC-64 of the bytes (never HoleSum). Two
// replicas whose ranges have equal sums hold the same bytes there, except
// that a range of written zeroes and a hole differ; copying the primary's
// range over the replica's is always right.
func (r *Replica) Checksum(off, n int64) (uint64, error) {
	if err := r.check(off, n); err != nil {
		return 0, err
	}
	if start, _, err := r.NextData(off); err != nil || start >= off+n {
		return HoleSum, err
	}
	buf := make([]byte, min(n, 1<<20))
	var sum uint64
	for done := int64(0); done < n; {
		chunk := buf[:min(int64(len(buf)), n-done)]
		if _, err := r.file.ReadAt(chunk, off+done); err != nil {
			return 0, err
		}
		sum = crc64.Update(sum, crcTable, chunk)
		done += int64(len(chunk))
	}
	if sum == HoleSum {
		sum = 1
	}
	return sum, nil
}

func newIncarnation() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never fails: see crypto/rand.Read
	return binary.BigEndian.Uint64(b[:]) | 1
}

// Close releases the data file.
func (r *Replica) Close() error {
	r.directMu.Lock()
	r.closed = true
	if r.direct != nil {
		r.direct.Close()
	}
	r.directMu.Unlock()
	return r.file.Close()
}
