package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
)

// Workload shape.
const (
	// regionCells is each writer's own range of cells: only its owner
	// writes there, so a request the client resends after a reconnection
	// can never land on top of another writer's later data.
	regionCells = 192
	// maxWriteCells bounds a write: 6 KiB.
	maxWriteCells = 24
	// maxReadCells bounds a read: 8 KiB.
	maxReadCells = 32
)

// op is one operation of the history, as a client saw it.
type op struct {
	client    int
	vol       int
	write     bool
	firstCell int64
	cells     int
	value     uint64   // a write's value
	got       []uint64 // a read's value per cell
	call, ret int64    // nanoseconds since the history began
	unknown   bool     // a write that failed: it may or may not have happened
	err       string
}

// history collects the operations of every client.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []op
	// firstAckAfter is the time of the first write acknowledged after a
	// mark, for the failover figure; zero until then.
	mark     atomic.Int64
	firstAck atomic.Int64
}

func newHistory() *history { return &history{start: time.Now()} }

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(o op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
	if o.write && !o.unknown && h.mark.Load() != 0 && o.call >= h.mark.Load() {
		h.firstAck.CompareAndSwap(0, o.ret)
	}
}

// snapshot returns the operations recorded so far.
func (h *history) snapshot() []op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]op(nil), h.ops...)
}

// region is a writer's range of cells in a volume.
type region struct {
	vol   int
	first int64 // cell index
}

// regionsFor places writers regions in a volume of size bytes, spread
// over it and starting at cells that are not 4 KiB aligned.
func regionsFor(vol, writers int, size int64) []region {
	total := size / cellSize
	out := make([]region, writers)
	for w := range writers {
		out[w] = region{vol: vol, first: int64(w)*(total/int64(writers)) + 5 + int64(w)*3}
	}
	return out
}

// writer is one client: it writes its own region and reads any region of
// its volume.
type writer struct {
	id     int // global client id, from 1
	vol    int
	own    region
	all    []region
	client *nbdclient.Client
	rng    *rand.Rand
	hist   *history
	seq    uint64
}

// clientOptions are the frontend's reconnecting client settings.
func clientOptions(c *cluster, v *volume, retry time.Duration) nbdclient.Options {
	return nbdclient.Options{
		Endpoint:       c.endpoint(v.id),
		ExportName:     api.ExportName(v.id, v.generation),
		RetryTimeout:   retry,
		ConnectTimeout: 2 * time.Second,
		TLS:            c.nbdTLS,
	}
}

// run issues operations until stop is closed.
func (w *writer) run(ctx context.Context, stop <-chan struct{}) {
	sinceFlush := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		switch r := w.rng.IntN(100); {
		case r < 55:
			w.writeOnce(ctx)
			sinceFlush++
		case r < 90:
			w.readOnce(ctx)
		default:
			sinceFlush = 4
		}
		if sinceFlush >= 4 && !stopped(stop) {
			w.flush(ctx)
			sinceFlush = 0
		}
		time.Sleep(time.Duration(1+w.rng.IntN(4)) * time.Millisecond)
	}
}

// writeOnce writes 1 to maxWriteCells whole cells of the writer's region;
// more than a third of them reach past 4 KiB.
func (w *writer) writeOnce(ctx context.Context) {
	n := 1 + w.rng.IntN(maxWriteCells)
	first := w.own.first + int64(w.rng.IntN(regionCells-n+1))
	w.seq++
	v := writeValue(w.id, w.seq)
	buf := make([]byte, n*cellSize)
	for i := range n {
		fillCell(buf[i*cellSize:(i+1)*cellSize], v, first+int64(i))
	}
	o := op{client: w.id, vol: w.vol, write: true, firstCell: first, cells: n, value: v}
	o.call = w.hist.now()
	err := w.client.WriteAt(ctx, buf, first*cellSize, w.rng.IntN(10) == 0)
	o.ret = w.hist.now()
	if err != nil {
		o.unknown, o.err = true, err.Error()
	}
	w.hist.add(o)
}

// readOnce reads 1 to maxReadCells cells of a random region.
func (w *writer) readOnce(ctx context.Context) {
	reg := w.all[w.rng.IntN(len(w.all))]
	n := 1 + w.rng.IntN(maxReadCells)
	first := reg.first + int64(w.rng.IntN(regionCells-n+1))
	o, err := readCells(ctx, w.client, w.hist, w.id, w.vol, first, n)
	if err != nil {
		return // a failed read changes nothing
	}
	w.hist.add(o)
}

// readCells reads n cells from first and decodes them.
func readCells(ctx context.Context, c *nbdclient.Client, h *history, client, vol int, first int64, n int) (op, error) {
	buf := make([]byte, n*cellSize)
	o := op{client: client, vol: vol, firstCell: first, cells: n}
	o.call = h.now()
	err := c.ReadAt(ctx, buf, first*cellSize)
	o.ret = h.now()
	if err != nil {
		return o, err
	}
	o.got = make([]uint64, n)
	for i := range n {
		o.got[i] = decodeCell(buf[i*cellSize:(i+1)*cellSize], first+int64(i))
	}
	return o, nil
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func (w *writer) flush(ctx context.Context) {
	_ = w.client.Flush(ctx) // a flush outcome is not part of the model
}

// workload is every writer of a schedule.
type workload struct {
	writers []*writer
	hist    *history
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startWorkload connects writersPerVol clients to each volume and starts
// them.
func startWorkload(ctx context.Context, c *cluster, vols []*volume, writersPerVol int, seed uint64, retry time.Duration) (*workload, error) {
	wl := &workload{hist: newHistory(), stop: make(chan struct{})}
	id := 0
	for vi, v := range vols {
		regs := regionsFor(vi, writersPerVol, v.size)
		for k := range writersPerVol {
			id++
			cl, err := nbdclient.Dial(ctx, clientOptions(c, v, retry))
			if err != nil {
				wl.close()
				return nil, fmt.Errorf("connect writer %d to volume %s: %w", id, v.id, err)
			}
			wl.writers = append(wl.writers, &writer{
				id: id, vol: vi, own: regs[k], all: regs, client: cl,
				rng: rand.New(rand.NewPCG(seed, uint64(id))), hist: wl.hist,
			})
		}
	}
	for _, w := range wl.writers {
		wl.wg.Add(1)
		go func() {
			defer wl.wg.Done()
			w.run(ctx, wl.stop)
		}()
	}
	return wl, nil
}

// halt stops the writers and waits for their last operations.
func (wl *workload) halt() {
	select {
	case <-wl.stop:
	default:
		close(wl.stop)
	}
	wl.wg.Wait()
}

// close halts the writers and disconnects them.
func (wl *workload) close() {
	wl.halt()
	for _, w := range wl.writers {
		w.client.Close()
	}
}

// finalRead reads back every region through a fresh client per volume,
// after the cluster healed, and adds the reads to the history.
func (wl *workload) finalRead(ctx context.Context, c *cluster, vols []*volume, writersPerVol int, retry time.Duration) error {
	var errs []error
	for vi, v := range vols {
		cl, err := nbdclient.Dial(ctx, clientOptions(c, v, retry))
		if err != nil {
			errs = append(errs, fmt.Errorf("final read of %s: %w", v.name, err))
			continue
		}
		for _, reg := range regionsFor(vi, writersPerVol, v.size) {
			o, err := readCells(ctx, cl, wl.hist, 0, vi, reg.first, regionCells)
			if err != nil {
				errs = append(errs, fmt.Errorf("final read of %s at cell %d: %w", v.name, reg.first, err))
				continue
			}
			wl.hist.add(o)
		}
		cl.Close()
	}
	return errors.Join(errs...)
}
