package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// Errors returned by the primary.
var (
	// ErrDeposed means a replica or the layout named a newer epoch: this
	// node is no longer the volume's primary and must not serve it.
	ErrDeposed = errors.New("primary deposed by a newer epoch")
	// ErrStaleAttachment means a client presented an attachment
	// generation lower than the primary's: a later publish attached the
	// volume elsewhere (invariant I3).
	ErrStaleAttachment = errors.New("stale attachment generation")
	// ErrClosed means the primary was shut down.
	ErrClosed = errors.New("primary closed")
	// ErrInvalidLayout means a layout update would break an invariant.
	ErrInvalidLayout = errors.New("invalid layout")
	// ErrIncomplete means the local replica's background copy never
	// finished: it may lack acknowledged writes and cannot serve.
	ErrIncomplete = errors.New("replica copy incomplete")
	// ErrUnreachable means the primary stopped serving because writes
	// waited on a report the controller did not answer in time: the
	// volume has likely moved to another primary.
	ErrUnreachable = errors.New("controller unreachable")
	// ErrDegraded means a write waited longer than DegradedTimeout for
	// the volume to have MinInSync replicas again. It was not
	// acknowledged.
	ErrDegraded = errors.New("too few in-sync replicas")
)

// Dialer opens connections to replicas. *net.Dialer dials plain TCP; a
// *tls.Dialer adds mutual TLS without any change to the protocol.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Reporter is how the primary asks the controller to change a volume's
// layout. Each call returns the layout the controller persisted (with a
// higher epoch) or an error; the primary retries until it gets a layout
// that resolves the report.
type Reporter interface {
	// ReplicaFaulted reports that nodeID did not acknowledge in time or
	// lost its connection. Writes that need the replica wait until the
	// returned layout no longer lists it as InSync.
	ReplicaFaulted(ctx context.Context, volumeID string, epoch uint64, nodeID string, cause error) (Layout, error)
	// ReplicaSynced reports that nodeID finished its background copy and
	// has applied every live write sent so far.
	ReplicaSynced(ctx context.Context, volumeID string, epoch uint64, nodeID string) (Layout, error)
}

// PrimaryOptions tune a primary.
type PrimaryOptions struct {
	// NodeID is this node's id; the layout's Primary must name it.
	NodeID string
	// Dialer connects to replicas. Nil means plain TCP.
	Dialer Dialer
	// Reporter receives fault and sync reports. With none, a faulted
	// InSync replica blocks writes until a new layout arrives through
	// UpdateLayout.
	Reporter Reporter
	// AckTimeout is how long a replica may take to acknowledge a request
	// (or to accept a connection) before it is reported as faulted. Zero
	// means 2 seconds.
	AckTimeout time.Duration
	// RetryInterval spaces repeated reports. Zero means 500ms.
	RetryInterval time.Duration
	// CopyChunk is the size of one background copy frame. Zero means 1 MiB.
	CopyChunk int
	// CopyWindow bounds the copy bytes in flight to one replica. Zero
	// means 16 MiB.
	CopyWindow int
	// FenceTimeout is how long a fault report may go unanswered while
	// writes wait for it before the primary stops serving (ErrUnreachable).
	// Zero means DefaultFenceTimeout.
	FenceTimeout time.Duration
	// DegradedTimeout is how long a write waits for the volume to have
	// Layout.MinInSync replicas before it fails with ErrDegraded. Zero
	// means DefaultDegradedTimeout.
	DegradedTimeout time.Duration
}

// Defaults of PrimaryOptions.
const (
	DefaultFenceTimeout    = 4 * time.Second
	DefaultDegradedTimeout = 30 * time.Second
)

func (o *PrimaryOptions) defaults() {
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{}
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = 2 * time.Second
	}
	if o.RetryInterval == 0 {
		o.RetryInterval = 500 * time.Millisecond
	}
	if o.CopyChunk == 0 {
		o.CopyChunk = 1 << 20
	}
	if o.CopyWindow == 0 {
		o.CopyWindow = 16 << 20
	}
	if o.FenceTimeout == 0 {
		o.FenceTimeout = DefaultFenceTimeout
	}
	if o.DegradedTimeout == 0 {
		o.DegradedTimeout = DefaultDegradedTimeout
	}
}

// Primary serves a volume from its local replica and replicates every
// write, synchronously, to the other replicas of the layout.
//
// Writes are sequenced: the local write and the enqueueing of its frame
// on every replica connection happen under one lock, so every replica
// receives overlapping writes in the order the primary applied them. A
// write is acknowledged once each replica the current layout lists as
// InSync has acknowledged it (I1).
type Primary struct {
	volume string // the layout's VolumeID; fixed, so read without mu
	store  *blockstore.Replica
	opts   PrimaryOptions
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup // link goroutines
	calls  sync.WaitGroup // client calls in progress; Close waits for them

	// seqMu orders writes: local apply plus enqueue on every link.
	seqMu sync.Mutex

	// size is the layout's volume size: what clients may reach. The
	// local replica may hold more, after a grow that is not yet committed.
	size atomic.Int64

	mu     sync.Mutex // guards everything below and link queues
	layout Layout
	links  map[string]*link
	ops    map[uint64]*op
	nextID uint64
	fence  error

	// trackers record, for each replica that left the write path, what
	// it has missed since, so that it can come back by copying only that
	// (see tracker).
	trackers map[string]*tracker

	// generation is the highest attachment generation a layout brought.
	generation uint64
	// attached counts the client calls in progress by the attachment
	// generation they were admitted at (see Admit); left is closed and
	// cleared when one of them leaves while DrainStale waits.
	attached map[uint64]int
	left     chan struct{}
}

// op is one client request waiting for replica acknowledgements.
type op struct {
	id      uint64
	links   []*link
	acked   []bool
	err     error
	done    chan struct{}
	started time.Time
}

// NewPrimary starts serving the volume held in store with the given
// layout, connecting to every other InSync or Syncing replica.
func NewPrimary(store *blockstore.Replica, layout Layout, opts PrimaryOptions) (*Primary, error) {
	opts.defaults()
	if err := checkLayout(layout, opts.NodeID, store.Size()); err != nil {
		return nil, err
	}
	if store.Meta().Rebuilding {
		return nil, fmt.Errorf("start primary for %s: %w", layout.VolumeID, ErrIncomplete)
	}
	if err := store.ObserveEpoch(layout.Epoch); err != nil {
		return nil, fmt.Errorf("start primary for %s: %w", layout.VolumeID, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	p := &Primary{
		volume: layout.VolumeID, store: store, opts: opts, ctx: ctx, stop: stop,
		links: map[string]*link{}, ops: map[uint64]*op{},
		attached: map[uint64]int{}, trackers: map[string]*tracker{},
	}
	p.size.Store(layout.Size)
	p.mu.Lock()
	p.layout = layout
	p.generation = layout.AttachmentGeneration
	p.startLinksLocked(layout)
	p.mu.Unlock()
	p.wg.Add(1)
	go p.degradedWatch()
	klog.InfoS("Serving volume as primary", "volume", layout.VolumeID, "epoch", layout.Epoch, "replicas", len(layout.Replicas))
	return p, nil
}

func checkLayout(l Layout, self string, size int64) error {
	if l.Primary != self {
		return fmt.Errorf("%w: primary is %q, this node is %q", ErrInvalidLayout, l.Primary, self)
	}
	if l.Size <= 0 || l.Size > size {
		return fmt.Errorf("%w: size %d, replica holds %d", ErrInvalidLayout, l.Size, size)
	}
	found := false
	nodes, addrs := map[string]bool{}, map[string]bool{}
	for _, r := range l.Replicas {
		if nodes[r.NodeID] || addrs[r.Address] {
			return fmt.Errorf("%w: replica %s (%s) listed twice", ErrInvalidLayout, r.NodeID, r.Address)
		}
		nodes[r.NodeID], addrs[r.Address] = true, true
		if r.NodeID == self {
			found = r.State == InSync
		}
	}
	if !found {
		return fmt.Errorf("%w: primary %s is not an InSync replica", ErrInvalidLayout, self)
	}
	return nil
}

// Size returns the volume size in bytes: the current layout's, which a
// later layout may raise (volume expansion), never lower.
func (p *Primary) Size() int64 { return p.size.Load() }

// Admit admits one client call made at an attachment generation, or
// refuses it with ErrStaleAttachment once a layout raised the primary's
// generation past it. The caller calls Leave with the same generation
// when the call is done. Admission and the raise are ordered by one lock,
// so DrainStale can wait for every call admitted before a raise.
// Generation 0 is administrative access: always admitted, never counted.
func (p *Primary) Admit(generation uint64) error {
	if generation == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.generation; generation < cur {
		return fmt.Errorf("volume %s: client generation %d, current %d: %w",
			p.layout.VolumeID, generation, cur, ErrStaleAttachment)
	}
	p.attached[generation]++
	return nil
}

// Leave ends a call that Admit admitted.
func (p *Primary) Leave(generation uint64) {
	if generation == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.attached[generation]--; p.attached[generation] <= 0 {
		delete(p.attached, generation)
	}
	if p.left != nil {
		close(p.left)
		p.left = nil
	}
}

// DrainStale waits until no call admitted at a generation lower than the
// primary's is in progress, or ctx ends. Once it returns nil, nothing a
// fenced client sent can still reach the replicas.
func (p *Primary) DrainStale(ctx context.Context) error {
	for {
		p.mu.Lock()
		stale := p.staleCallsLocked()
		if stale > 0 && p.left == nil {
			p.left = make(chan struct{})
		}
		left := p.left
		p.mu.Unlock()
		if stale == 0 {
			return nil
		}
		select {
		case <-left:
		case <-ctx.Done():
			return fmt.Errorf("%d calls of older attachments still in progress: %w", stale, ctx.Err())
		}
	}
}

func (p *Primary) staleCallsLocked() int {
	n, cur := 0, p.generation
	for g, calls := range p.attached {
		if g < cur {
			n += calls
		}
	}
	return n
}

// raiseGenerationLocked keeps the higher of the current attachment
// generation and g, and returns it: the generation never goes down, even
// if a later layout carries a lower one.
func (p *Primary) raiseGenerationLocked(g uint64) uint64 {
	p.generation = max(g, p.generation)
	return p.generation
}

// Layout returns the layout the primary is acting on.
func (p *Primary) Layout() Layout {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.layout
}

// ReadAt reads from the primary's own replica, which holds every
// acknowledged write.
func (p *Primary) ReadAt(ctx context.Context, b []byte, off int64) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.calls.Done()
	if err := p.inRange(off, int64(len(b))); err != nil {
		return err
	}
	return p.store.ReadAt(b, off)
}

// inRange refuses an access past the layout's size, which the local
// replica alone may already hold (a grow not yet committed).
func (p *Primary) inRange(off, n int64) error { return blockstore.CheckRange(off, n, p.Size()) }

// enter admits a client call unless the primary is fenced. Close waits
// for admitted calls, so none touches the replica after Close returns.
func (p *Primary) enter() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fence != nil {
		return p.fence
	}
	p.calls.Add(1)
	return nil
}

// WriteAt writes b at off on every replica. It does not retain b.
func (p *Primary) WriteAt(ctx context.Context, b []byte, off int64, fua bool) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.calls.Done()
	if err := p.inRange(off, int64(len(b))); err != nil {
		return err
	}
	data := append([]byte(nil), b...)
	f := Frame{Op: OpWrite, Offset: uint64(off), Length: uint32(len(data)), Payload: data}
	if fua {
		f.Flags = FlagFUA
	}
	o, err := p.sequence(f, func() error { return p.store.WriteAt(data, off) })
	if err != nil {
		return err
	}
	return p.finishLocal(ctx, o, fua)
}

// Trim discards a range on every replica.
func (p *Primary) Trim(ctx context.Context, off, length int64) error {
	return p.WriteZeroes(ctx, off, length, false)
}

// WriteZeroes makes a range read as zeroes on every replica.
func (p *Primary) WriteZeroes(ctx context.Context, off, length int64, fua bool) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.calls.Done()
	if err := p.inRange(off, length); err != nil {
		return err
	}
	return p.zero(ctx, off, length, fua)
}

func (p *Primary) zero(ctx context.Context, off, length int64, fua bool) error {
	f := Frame{Op: OpZero, Offset: uint64(off), Length: uint32(length)}
	if length > 1<<31 {
		// Split: the frame's length field is 32 bits.
		if err := p.zero(ctx, off, 1<<30, fua); err != nil {
			return err
		}
		return p.zero(ctx, off+1<<30, length-1<<30, fua)
	}
	if fua {
		f.Flags = FlagFUA
	}
	o, err := p.sequence(f, func() error { return p.store.PunchHole(off, length) })
	if err != nil {
		return err
	}
	return p.finishLocal(ctx, o, fua)
}

// Flush returns once every write acknowledged before it is durable on the
// primary and on every InSync replica.
func (p *Primary) Flush(ctx context.Context) error {
	if err := p.enter(); err != nil {
		return err
	}
	defer p.calls.Done()
	o, err := p.sequence(Frame{Op: OpFlush}, nil)
	if err != nil {
		return err
	}
	return p.finishLocal(ctx, o, true)
}

func (p *Primary) finishLocal(ctx context.Context, o *op, sync bool) error {
	if sync {
		if err := p.store.Sync(); err != nil {
			return fmt.Errorf("sync local replica: %w", err)
		}
	}
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// applyLocal runs local on the primary's own replica at the layout's
// epoch. If the replica has seen a newer epoch than this primary knows,
// another primary has taken over: this one is fenced and local does not
// run, so a deposed primary cannot change even its own copy (I3).
func (p *Primary) applyLocal(local func() error) error {
	if local == nil {
		local = func() error { return nil }
	}
	for {
		p.mu.Lock()
		epoch, err := p.layout.Epoch, p.fence
		p.mu.Unlock()
		if err != nil {
			return err
		}
		err = p.store.Apply(epoch, local)
		if !errors.Is(err, blockstore.ErrStaleEpoch) {
			if err != nil {
				return fmt.Errorf("local replica: %w", err)
			}
			return nil
		}
		p.mu.Lock()
		moved := p.layout.Epoch > epoch
		if !moved {
			p.fenceLocked(fmt.Errorf("%w: local replica is at epoch %d", ErrDeposed, p.store.Epoch()))
		}
		p.mu.Unlock()
		if !moved {
			return p.fenced()
		}
	}
}

func (p *Primary) fenced() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fence
}

// sequence applies a request locally and queues it to every replica link
// as one step, so replicas see requests in the primary's order.
func (p *Primary) sequence(f Frame, local func() error) (*op, error) {
	p.seqMu.Lock()
	defer p.seqMu.Unlock()
	if err := p.applyLocal(local); err != nil {
		return nil, err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fence != nil {
		return nil, p.fence
	}
	p.nextID++
	o := &op{id: p.nextID, done: make(chan struct{}), started: time.Now()}
	if f.Op == OpWrite || f.Op == OpZero {
		for _, t := range p.trackers {
			t.missed.add(int64(f.Offset), int64(f.Length))
		}
	}
	for _, l := range p.links {
		if l.faulted != nil && !l.countsLocked() {
			continue
		}
		o.links = append(o.links, l)
		o.acked = append(o.acked, false)
		if l.faulted == nil {
			l.enqueueLocked(f, &pending{op: o, idx: len(o.links) - 1})
		}
	}
	p.ops[o.id] = o
	p.tryCompleteLocked(o)
	return o, nil
}

// tryCompleteLocked finishes o when every replica the layout counts has
// acknowledged it. A replica whose link joined after o was sequenced is
// not in o.links: it gets o's data from the background copy, which ends
// before it can become InSync.
//
// It also waits until the primary and the counting replicas that have o
// are at least Layout.MinInSync: below that the volume keeps writes
// waiting rather than acknowledge them with too few copies. A counting
// replica that is not in o.links has o through its copy.
func (p *Primary) tryCompleteLocked(o *op) {
	copies := 1
	for i, l := range o.links {
		switch {
		case !l.countsLocked():
		case !o.acked[i]:
			return
		default:
			copies++
		}
	}
	if copies < p.layout.MinInSync {
		for _, l := range p.links {
			if l.countsLocked() && !slices.Contains(o.links, l) {
				copies++
			}
		}
		if copies < p.layout.MinInSync {
			return
		}
	}
	p.finishOpLocked(o, nil)
}

// degradedWatch fails writes that have waited DegradedTimeout for the
// volume to have enough in-sync replicas.
func (p *Primary) degradedWatch() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.opts.DegradedTimeout/8, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			for _, o := range p.ops {
				if now.Sub(o.started) > p.opts.DegradedTimeout && p.waitsForCopiesLocked(o) {
					p.finishOpLocked(o, fmt.Errorf("volume %s: %w: waited %s for %d",
						p.layout.VolumeID, ErrDegraded, p.opts.DegradedTimeout, p.layout.MinInSync))
				}
			}
			p.mu.Unlock()
		}
	}
}

// waitsForCopiesLocked says whether o waits only because the volume has
// too few in-sync replicas: every counting replica has acknowledged it.
func (p *Primary) waitsForCopiesLocked(o *op) bool {
	for i, l := range o.links {
		if l.countsLocked() && !o.acked[i] {
			return false
		}
	}
	return true
}

func (p *Primary) finishOpLocked(o *op, err error) {
	delete(p.ops, o.id)
	o.err = err
	close(o.done)
}

func (p *Primary) recheckLocked() {
	for _, o := range p.ops {
		p.tryCompleteLocked(o)
	}
}

// fenceLocked stops the primary from serving: pending and future requests
// fail with err.
func (p *Primary) fenceLocked(err error) {
	if p.fence != nil {
		return
	}
	p.fence = err
	for _, o := range p.ops {
		p.finishOpLocked(o, err)
	}
	for _, l := range p.links {
		l.closeLocked()
	}
	klog.InfoS("Primary stopped serving", "volume", p.layout.VolumeID, "epoch", p.layout.Epoch, "reason", err)
}

// UpdateLayout moves the primary to a newer layout: replicas leave or join
// the write path, and writes waiting only for removed replicas complete.
// An older layout is ignored. A layout naming another primary fences this
// one.
func (p *Primary) UpdateLayout(l Layout) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fence != nil {
		return p.fence
	}
	if l.Epoch <= p.layout.Epoch {
		return nil
	}
	if l.Primary != p.opts.NodeID {
		p.fenceLocked(fmt.Errorf("%w: epoch %d names primary %s", ErrDeposed, l.Epoch, l.Primary))
		return nil
	}
	if err := p.validateUpdateLocked(l); err != nil {
		return err
	}
	if err := p.store.ObserveEpoch(l.Epoch); err != nil {
		p.fenceLocked(fmt.Errorf("%w: %v", ErrDeposed, err))
		return err
	}
	l.AttachmentGeneration = p.raiseGenerationLocked(l.AttachmentGeneration)
	p.layout = l
	p.size.Store(l.Size)
	p.applyLinksLocked(l)
	p.recheckLocked()
	klog.InfoS("Primary moved to new layout", "volume", l.VolumeID, "epoch", l.Epoch, "replicas", states(l))
	return nil
}

// validateUpdateLocked refuses a layout that would count a replica for
// acknowledgement without it having every write: a replica can become
// InSync only from Syncing (after its copy) or by staying InSync.
func (p *Primary) validateUpdateLocked(l Layout) error {
	if err := checkLayout(l, p.opts.NodeID, p.store.Size()); err != nil {
		return err
	}
	if l.VolumeID != p.volume {
		return fmt.Errorf("%w: layout of volume %s given to the primary of %s", ErrInvalidLayout, l.VolumeID, p.volume)
	}
	if l.Size < p.layout.Size {
		return fmt.Errorf("%w: size %d is below the current %d", ErrInvalidLayout, l.Size, p.layout.Size)
	}
	for _, r := range l.Replicas {
		if r.NodeID == p.opts.NodeID || r.State != InSync {
			continue
		}
		cur, ok := p.links[r.NodeID]
		if !ok {
			return fmt.Errorf("%w: %s cannot become InSync without a completed copy", ErrInvalidLayout, r.NodeID)
		}
		if cur.state != InSync && !cur.copied.Load() {
			return fmt.Errorf("%w: %s has not finished its copy", ErrInvalidLayout, r.NodeID)
		}
	}
	return nil
}

// startLinksLocked connects a new primary to the other replicas of l.
// Those InSync are verified against the primary's data: a previous
// primary may have sent writes no client saw acknowledged to some of
// them and not to others.
func (p *Primary) startLinksLocked(l Layout) {
	for _, r := range l.Replicas {
		if r.NodeID != p.opts.NodeID && (r.State == InSync || r.State == Syncing) {
			p.links[r.NodeID] = p.startLink(r, r.State == InSync, nil)
		}
	}
}

// applyLinksLocked makes the set of links match l. A replica that leaves
// the write path but stays in the layout gets a tracker; a Syncing one
// that comes back takes its tracker along to its resync.
func (p *Primary) applyLinksLocked(l Layout) {
	want, listed := map[string]ReplicaInfo{}, map[string]bool{}
	for _, r := range l.Replicas {
		listed[r.NodeID] = true
		if r.NodeID != p.opts.NodeID && (r.State == InSync || r.State == Syncing) {
			want[r.NodeID] = r
		}
	}
	for id, lk := range p.links {
		if _, ok := want[id]; !ok {
			if lk.faulted == nil {
				p.trackLocked(lk)
			}
			lk.closeLocked()
			delete(p.links, id)
		}
	}
	for id := range p.trackers {
		if !listed[id] {
			delete(p.trackers, id)
		}
	}
	for id, r := range want {
		lk, ok := p.links[id]
		if ok && lk.faulted != nil && r.State == Syncing {
			// A new copy replaces a failed one.
			lk.closeLocked()
			ok = false
		}
		if !ok {
			resume := p.trackers[id]
			delete(p.trackers, id)
			p.links[id] = p.startLink(r, false, resume)
			continue
		}
		lk.state = r.State
	}
}

// trackLocked starts recording what the replica of a link leaving the
// write path misses, if the link knows what it may lack already.
func (p *Primary) trackLocked(l *link) {
	if !l.trackableLocked() {
		delete(p.trackers, l.node)
		return
	}
	p.trackers[l.node] = &tracker{incarnation: l.incarnation, missed: l.missedLocked()}
}

func states(l Layout) []string {
	out := make([]string, 0, len(l.Replicas))
	for _, r := range l.Replicas {
		out = append(out, r.NodeID+"="+string(r.State))
	}
	return out
}

// Fenced returns why the primary stopped serving, or nil while it serves.
func (p *Primary) Fenced() error { return p.fenced() }

// Close stops the primary. Pending requests fail with ErrClosed.
func (p *Primary) Close() error {
	p.mu.Lock()
	p.fenceLocked(ErrClosed)
	p.mu.Unlock()
	p.calls.Wait()
	p.stop()
	p.wg.Wait()
	return nil
}

// ReplicaStatus describes one replica as the primary sees it.
type ReplicaStatus struct {
	NodeID string
	State  ReplicaState
	// Connected is true while the replication connection is up.
	Connected bool
	// Fault is why the replica left the write path, if it did.
	Fault string
	// SyncedBytes and TotalBytes give a resync's progress: the bytes it
	// covers and the part it has compared or copied. A replica that comes
	// back after a short absence covers only what it missed.
	SyncedBytes int64
	TotalBytes  int64
	// CopiedBytes is what the resync has sent so far.
	CopiedBytes int64
}

// Status reports every replica of the layout as the primary sees it,
// itself first.
func (p *Primary) Status() []ReplicaStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	size := p.Size()
	out := []ReplicaStatus{{NodeID: p.opts.NodeID, State: InSync, Connected: true, SyncedBytes: size, TotalBytes: size}}
	for _, r := range p.layout.Replicas {
		if r.NodeID == p.opts.NodeID {
			continue
		}
		st := ReplicaStatus{NodeID: r.NodeID, State: r.State, TotalBytes: size}
		if l, ok := p.links[r.NodeID]; ok {
			st.Connected = l.conn != nil && l.faulted == nil
			st.SyncedBytes = l.syncedBytes.Load()
			st.CopiedBytes = l.copiedBytes.Load()
			if total := l.syncTotal.Load(); total > 0 {
				st.TotalBytes = total
			}
			if l.faulted != nil {
				st.Fault = l.faulted.Error()
			}
		}
		if r.State == InSync && st.Fault == "" {
			st.SyncedBytes = st.TotalBytes
		}
		out = append(out, st)
	}
	return out
}
