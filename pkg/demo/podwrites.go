package demo

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// What the pod writes while the volume fails over. Two kinds of writer
// run at once, each in its own goroutine:
//
//   - probes, each doing small synchronous writes (O_DSYNC, so that a
//     write returns only once the volume has acknowledged it) to a log
//     file of its own, and timestamping when each write was issued and
//     when it returned; they time how long writes stall;
//   - a file writer, writing files of random bytes and fsyncing each.
//
// Every write that returns is recorded with the checksum it leaves, so
// that the files can be verified afterwards.
const (
	podWritesDir  = "during-failover"
	probes        = 4
	probeInterval = 20 * time.Millisecond
	probeRecord   = 512
	writtenFile   = 128 << 10
	fileInterval  = 100 * time.Millisecond
)

// ack is one probe write: when it was issued and when the volume
// acknowledged it.
type ack struct {
	issued, done time.Time
}

// podWrites are the writers running on a mounted volume.
type podWrites struct {
	root   string // the pod's mount
	cancel context.CancelFunc
	ended  chan struct{} // closed once every writer has returned

	mu    sync.Mutex
	acks  []ack
	sums  manifest // path below root -> sha256 of what was acknowledged
	files int      // files written in full
	err   error
}

// startPodWrites starts the writers in podWritesDir below root.
func startPodWrites(root string) (*podWrites, error) {
	dir := filepath.Join(root, podWritesDir)
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &podWrites{root: root, cancel: cancel, ended: make(chan struct{}), sums: manifest{}}
	var wg sync.WaitGroup
	for i := range probes {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("probe-%d.log", i)),
			os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_DSYNC, 0o644)
		if err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
		phase := time.Duration(i) * probeInterval / probes
		wg.Go(func() { p.probe(ctx, f, phase) })
	}
	wg.Go(func() { p.writeFiles(ctx, filepath.Join(dir, "files")) })
	go func() {
		wg.Wait()
		close(p.ended)
	}()
	return p, nil
}

// stop asks the writers to stop after the write each has in flight, and
// waits up to timeout for them. It returns the first write error.
func (p *podWrites) stop(timeout time.Duration) error {
	p.cancel()
	select {
	case <-p.ended:
	case <-time.After(timeout):
		return fmt.Errorf("the pod's writers are still blocked in a write after %s", timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// failed returns the first write error so far.
func (p *podWrites) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// probe writes one record after another to f, a record every
// probeInterval, starting after phase; after a stall it carries on at
// once rather than catching up.
func (p *podWrites) probe(ctx context.Context, f *os.File, phase time.Duration) {
	defer f.Close()
	h := sha256.New()
	defer p.recordSum(f.Name(), h)
	next := time.Now().Add(phase)
	for seq := 0; sleepUntil(ctx, next); seq++ {
		issued := time.Now()
		_, err := f.WriteAt(probeLine(filepath.Base(f.Name()), seq, issued), int64(seq)*probeRecord)
		done := time.Now()
		if err != nil {
			p.fail(fmt.Errorf("probe write %d to %s: %w", seq, f.Name(), err))
			return
		}
		h.Write(probeLine(filepath.Base(f.Name()), seq, issued))
		p.recordAck(ack{issued: issued, done: done})
		next = next.Add(probeInterval)
		if next.Before(done) {
			next = done
		}
	}
}

// probeLine is one record of a probe log: readable, probeRecord bytes.
func probeLine(name string, seq int, issued time.Time) []byte {
	b := make([]byte, probeRecord)
	for i := range b {
		b[i] = ' '
	}
	copy(b, fmt.Sprintf("%s write %d issued %s", name, seq, issued.UTC().Format(time.RFC3339Nano)))
	b[len(b)-1] = '\n'
	return b
}

// writeFiles writes a file of random bytes and fsyncs it, every
// fileInterval.
func (p *podWrites) writeFiles(ctx context.Context, dir string) {
	next := time.Now()
	for i := 0; sleepUntil(ctx, next); i++ {
		name := filepath.Join(dir, fmt.Sprintf("%04d.bin", i))
		data := fileBytes(i)
		if err := writeSynced(name, data); err != nil {
			p.fail(err)
			return
		}
		sum := sha256.Sum256(data)
		p.mu.Lock()
		p.sums[p.rel(name)] = hex.EncodeToString(sum[:])
		p.files++
		p.mu.Unlock()
		next = time.Now().Add(fileInterval)
	}
}

// fileBytes are the contents of the i-th file: writtenFile random bytes
// seeded by i.
func fileBytes(i int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	rng := rand.NewChaCha8(seed)
	b := make([]byte, writtenFile)
	rng.Read(b)
	return b
}

// writeSynced creates the file and returns once the volume has
// acknowledged its contents.
func writeSynced(name string, data []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// sleepUntil waits until t, and says whether the writers should go on.
func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return ctx.Err() == nil
	}
}

func (p *podWrites) rel(name string) string {
	rel, err := filepath.Rel(p.root, name)
	if err != nil {
		return name
	}
	return filepath.ToSlash(rel)
}

func (p *podWrites) recordAck(a ack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.acks = append(p.acks, a)
}

func (p *podWrites) recordSum(name string, h hash.Hash) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sums[p.rel(name)] = hex.EncodeToString(h.Sum(nil))
}

func (p *podWrites) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err = errors.Join(p.err, err)
}

// written returns what the writers left on the volume, by path below
// the mount, and the probe writes so far, oldest first.
func (p *podWrites) written() (manifest, []ack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := manifest{}
	for k, v := range p.sums {
		m[k] = v
	}
	acks := slices.Clone(p.acks)
	slices.SortFunc(acks, func(a, b ack) int { return a.done.Compare(b.done) })
	return m, acks
}

// firstAckAfter returns the first write acknowledged among those issued
// after t: with the old primary dead at t, the first write the new
// primary acknowledged.
func firstAckAfter(acks []ack, t time.Time) (ack, bool) {
	var first ack
	found := false
	for _, a := range acks {
		if a.issued.After(t) && (!found || a.done.Before(first.done)) {
			first, found = a, true
		}
	}
	return first, found
}

// longestStall returns the longest time without an acknowledged write,
// between two consecutive acknowledgements, and when it began.
func longestStall(acks []ack) (from time.Time, d time.Duration) {
	done := make([]time.Time, len(acks))
	for i, a := range acks {
		done[i] = a.done
	}
	slices.SortFunc(done, time.Time.Compare)
	for i := 1; i < len(done); i++ {
		if gap := done[i].Sub(done[i-1]); gap > d {
			from, d = done[i-1], gap
		}
	}
	return from, d
}

// prefixed returns m with every path put below dir.
func prefixed(dir string, m manifest) manifest {
	out := manifest{}
	for k, v := range m {
		out[path.Join(dir, k)] = v
	}
	return out
}
