package blockstore

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux native AIO, as the io_setup(2) family of system calls takes it.
// Only direct writes go through it: the kernel queues them at the disk
// and returns, where a pwrite on a filesystem that locks the file for the
// whole of an allocating direct write (ext4 does) lets only one write
// reach the disk at a time, however many threads issue them.

// aioIocb is struct iocb of <linux/aio_abi.h>, laid out for a
// little-endian machine.
type aioIocb struct {
	data      uint64 // returned in the completion event
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqPrio   int16
	fd        uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resFd     uint32
}

// aioEvent is struct io_event.
type aioEvent struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

const aioCmdPwrite = 1

// aioUsable says whether this machine's struct iocb has the layout of
// aioIocb: the order of its key and flags fields follows the byte order.
var aioUsable = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

func aioSetup(events int) (uint64, error) {
	var ctx uint64
	if _, _, e := unix.Syscall(unix.SYS_IO_SETUP, uintptr(events), uintptr(unsafe.Pointer(&ctx)), 0); e != 0 {
		return 0, e
	}
	return ctx, nil
}

func aioSubmit(ctx uint64, cb *aioIocb) error {
	list := [1]*aioIocb{cb}
	for {
		n, _, e := unix.Syscall(unix.SYS_IO_SUBMIT, uintptr(ctx), 1, uintptr(unsafe.Pointer(&list[0])))
		switch {
		case e == unix.EINTR:
			continue
		case e != 0:
			return e
		case n != 1:
			return fmt.Errorf("io_submit took %d of 1 requests", n)
		}
		return nil
	}
}

// aioGetEvents collects between minNr and len(events) completions, waiting
// at most timeout for them (nil: as long as it takes).
func aioGetEvents(ctx uint64, minNr int, events []aioEvent, timeout *unix.Timespec) (int, error) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_IO_GETEVENTS, uintptr(ctx), uintptr(minNr), uintptr(len(events)),
			uintptr(unsafe.Pointer(&events[0])), uintptr(unsafe.Pointer(timeout)), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// aioUsableContext says whether completions can be collected from ctx: a
// sandbox may allow io_setup and io_submit but refuse io_getevents, and
// writes whose completions cannot be collected must never be submitted.
func aioUsableContext(ctx uint64) bool {
	_, err := aioGetEvents(ctx, 0, make([]aioEvent, 1), &unix.Timespec{})
	return err == nil
}

func aioDestroy(ctx uint64) {
	unix.Syscall(unix.SYS_IO_DESTROY, uintptr(ctx), 0, 0)
}

// DirectWriter writes whole aligned blocks to a replica with O_DIRECT
// without waiting for each: up to its depth of writes are at the disk at
// once. Each write is epoch-checked as Apply checks a write, and holds
// the epoch until it is done, so no write of an older epoch lands after
// the replica has accepted a newer one. Where the kernel or the
// filesystem does not take asynchronous direct writes, or a write is not
// aligned, the write runs as WriteAtDirect on a goroutine of its own.
//
// A DirectWriter is for one stream of bulk copies, such as one replication
// connection's; Close waits for its writes and releases it.
type DirectWriter struct {
	r   *Replica
	ctx uint64 // zero: no asynchronous I/O here

	wg        sync.WaitGroup // writes not done
	submitted atomic.Int64   // writes the kernel took

	mu      sync.Mutex
	pending map[uint64]*directWrite
	nextID  uint64
	reaping bool // a goroutine waits for completions
	broken  bool // completions could not be collected: the context is gone
}

type directWrite struct {
	p    []byte // kept reachable until the kernel is done with it
	off  int64
	done func(error)
}

// NewDirectWriter returns a writer that keeps up to depth writes at the
// disk.
func (r *Replica) NewDirectWriter(depth int) *DirectWriter {
	w := &DirectWriter{r: r, pending: map[uint64]*directWrite{}}
	if aioUsable {
		if ctx, err := aioSetup(max(depth, 1)); err == nil {
			if aioUsableContext(ctx) {
				w.ctx = ctx
			} else {
				aioDestroy(ctx)
			}
		}
	}
	return w
}

// Asynchronous says whether writes go to the disk through the kernel's
// asynchronous I/O (otherwise each runs on a goroutine).
func (w *DirectWriter) Asynchronous() bool { return w.ctx != 0 }

// WriteAt starts writing p at off at the given epoch and returns; done
// gets the result, on another goroutine, once the write is complete. p
// must not change until then. The caller bounds the writes in flight to
// the writer's depth.
func (w *DirectWriter) WriteAt(epoch uint64, p []byte, off int64, done func(error)) {
	w.wg.Add(1)
	finish := func(err error) {
		done(err)
		w.wg.Done()
	}
	if err := w.r.check(off, int64(len(p))); err != nil {
		go finish(err)
		return
	}
	if err := w.r.holdEpoch(epoch); err != nil {
		go finish(err)
		return
	}
	release := func(err error) {
		w.r.mu.RUnlock()
		finish(err)
	}
	if w.ctx != 0 && DirectAligned(p, off) && w.submit(p, off, release) {
		return
	}
	go func() { release(w.r.writeDirect(p, off)) }()
}

// submit hands the write to the kernel, and says whether it took it.
func (w *DirectWriter) submit(p []byte, off int64, done func(error)) bool {
	f := w.r.directFile()
	if f == nil {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken {
		return false
	}
	w.nextID++
	id := w.nextID
	var submitted error
	// Control keeps the descriptor open while the request is submitted;
	// once submitted, the kernel holds the file itself.
	ctlErr := rc.Control(func(fd uintptr) {
		submitted = aioSubmit(w.ctx, &aioIocb{
			data: id, opcode: aioCmdPwrite, fd: uint32(fd),
			buf:    uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p)))),
			nbytes: uint64(len(p)), offset: off,
		})
	})
	if ctlErr != nil || submitted != nil {
		return false
	}
	w.submitted.Add(1)
	w.pending[id] = &directWrite{p: p, off: off, done: done}
	if !w.reaping {
		w.reaping = true
		go w.reap(w.ctx)
	}
	return true
}

// reap collects completions until no write is pending.
func (w *DirectWriter) reap(ctx uint64) {
	events := make([]aioEvent, 16)
	for {
		n, err := aioGetEvents(ctx, 1, events, nil)
		w.mu.Lock()
		if err != nil {
			// Completions cannot be collected (the probe in
			// NewDirectWriter makes this unexpected). The kernel may
			// still be writing from the pending buffers: destroying
			// the context waits for every request, and only then may
			// their epoch and buffers go. They are reported failed,
			// though some may have been written.
			aioDestroy(ctx)
			w.broken = true
			for id, dw := range w.pending {
				delete(w.pending, id)
				go dw.done(fmt.Errorf("asynchronous write at %d: %w", dw.off, err))
			}
			w.reaping = false
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			dw, ok := w.pending[ev.data]
			if !ok {
				continue
			}
			delete(w.pending, ev.data)
			go w.complete(dw, ev.res)
		}
		if len(w.pending) == 0 {
			w.reaping = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// complete finishes a write the kernel reports done with result res: the
// bytes written, or a negative errno.
func (w *DirectWriter) complete(dw *directWrite, res int64) {
	var err error
	switch {
	case res == int64(len(dw.p)):
	case res == -int64(unix.EINVAL):
		// The device wants a larger alignment: write it as
		// WriteAtDirect does, which learns that and falls back.
		err = w.r.writeDirect(dw.p, dw.off)
	case res < 0:
		err = fmt.Errorf("write %d bytes at %d: %w", len(dw.p), dw.off, unix.Errno(-res))
	default:
		// A short write (the disk filled up, say): the rest goes the
		// ordinary way, which reports why it cannot be written.
		err = w.r.writeDirect(dw.p[res:], dw.off+res)
	}
	dw.done(err)
}

// Close waits for every write and releases the writer, which must not be
// used afterwards.
func (w *DirectWriter) Close() {
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx != 0 && !w.broken {
		// No write is pending, so no reaper waits in the context.
		aioDestroy(w.ctx)
		w.broken = true
	}
}
