package replication

import (
	"bufio"
	"container/list"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/internal/budget"
	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/netlimit"
)

// Volumes gives the replica server the local replicas it may serve.
type Volumes interface {
	// Replica returns the local replica of the volume, or false.
	Replica(volumeID string) (*blockstore.Replica, bool)
}

// ServerOptions tune a replica server.
type ServerOptions struct {
	// NodeID is this node's id. A primary names the node it means to
	// reach; a hello for another node is refused. Empty accepts any.
	NodeID string
	// MaxBufferedBytes bounds the request payloads held in memory across
	// all connections. Zero means 256 MiB.
	MaxBufferedBytes int64
	// HelloTimeout bounds how long a new connection may take to bind to a
	// volume. Zero means 10 seconds.
	HelloTimeout time.Duration
	// MaxConnsPerIP bounds the connections one peer address may hold at
	// once; further ones are closed as soon as they are accepted. Zero
	// means no limit.
	MaxConnsPerIP int
	// MaxUnbound bounds the connections that have not bound to a volume
	// yet; a new connection past it closes the oldest of them, so that
	// idle connections cannot keep a primary out for HelloTimeout. Zero
	// means no limit.
	MaxUnbound int
	// Admit, when set, decides whether a peer may write a volume's
	// replica at an epoch: peer is the node its TLS certificate names
	// ("" on a connection without TLS). It is asked at the hello, before
	// the replica observes the epoch, and again for the first frame of
	// each higher epoch on the connection, so that neither a node that is
	// not the primary nor a deposed one can raise a replica's epoch and
	// lock the real primary out. A refusal is StatusForbidden, and closes
	// the connection.
	Admit func(peer, volume string, epoch uint64) error
}

// Server is the replica side of the replication protocol: it accepts
// connections from primaries and applies their frames to local replicas,
// in the order they arrive.
type Server struct {
	volumes Volumes
	opts    ServerOptions
	budget  *budget.Budget // payload bytes in memory, all connections

	mu      sync.Mutex
	closed  bool
	lis     []net.Listener
	conns   map[net.Conn]*serverConn
	perIP   *netlimit.PerAddr // connections per peer address, with MaxConnsPerIP
	unbound list.List         // of *serverConn before their hello, oldest first
	refused int               // connections turned away since the last log line
	lastLog time.Time
	wg      sync.WaitGroup
}

// NewServer returns a server for the given replicas.
func NewServer(volumes Volumes, opts ServerOptions) *Server {
	if opts.HelloTimeout == 0 {
		opts.HelloTimeout = 10 * time.Second
	}
	if opts.MaxBufferedBytes == 0 {
		opts.MaxBufferedBytes = 256 << 20
	}
	return &Server{volumes: volumes, opts: opts, conns: map[net.Conn]*serverConn{},
		perIP: netlimit.NewPerAddr(opts.MaxConnsPerIP), budget: budget.New(opts.MaxBufferedBytes)}
}

// Serve accepts connections on l until the server is closed. Wrap l with
// tls.NewListener to require TLS; the protocol does not change.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		return net.ErrClosed
	}
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		sc := newServerConn(s, c)
		switch s.addConn(sc) {
		case connRefused:
			c.Close()
			continue
		case serverClosed:
			c.Close()
			return nil
		}
		go func() {
			defer s.wg.Done()
			defer s.dropConn(c)
			sc.serve()
		}()
	}
}

func (s *Server) track(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.lis = append(s.lis, l)
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Outcomes of addConn.
const (
	connAdded = iota
	connRefused
	serverClosed
)

// addConn registers a new connection, unless the server is closed or its
// peer address holds MaxConnsPerIP already. Past MaxUnbound it closes the
// oldest connection that has not sent its hello.
func (s *Server) addConn(sc *serverConn) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return serverClosed
	}
	ip, ok := s.perIP.Acquire(sc.conn)
	if !ok {
		s.refusedLocked(sc, "connections per address")
		return connRefused
	}
	sc.ip = ip
	if s.opts.MaxUnbound > 0 {
		if s.unbound.Len() >= s.opts.MaxUnbound {
			oldest := s.unbound.Remove(s.unbound.Front()).(*serverConn)
			oldest.unbound = nil
			oldest.conn.Close()
			s.refusedLocked(oldest, "unbound connections")
		}
		sc.unbound = s.unbound.PushBack(sc)
	}
	s.conns[sc.conn] = sc
	s.wg.Add(1)
	return connAdded
}

// refusedLocked counts a connection a limit turned away, and logs the
// count at most every 10 seconds, so that a flood does not flood the log.
func (s *Server) refusedLocked(sc *serverConn, limit string) {
	s.refused++
	if time.Since(s.lastLog) < 10*time.Second {
		return
	}
	klog.InfoS("Replication connection limit reached", "limit", limit, "peer", sc.peer, "refused", s.refused)
	s.refused, s.lastLog = 0, time.Now()
}

// bound records that a connection's hello phase is over.
func (s *Server) bound(sc *serverConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc.unbound != nil {
		s.unbound.Remove(sc.unbound)
		sc.unbound = nil
	}
}

func (s *Server) dropConn(c net.Conn) {
	c.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.conns[c]
	delete(s.conns, c)
	if sc == nil {
		return
	}
	if sc.unbound != nil {
		s.unbound.Remove(sc.unbound)
		sc.unbound = nil
	}
	s.perIP.Release(sc.ip)
}

// Close stops accepting, closes every connection and waits for their
// handlers to return.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.lis {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// CloseVolume closes the connections bound to volumeID, for example when
// the replica is deleted.
func (s *Server) CloseVolume(volumeID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c, sc := range s.conns {
		if sc.boundTo() == volumeID {
			c.Close()
		}
	}
}

// serverConn applies one primary's frames to one replica.
type serverConn struct {
	srv     *Server
	conn    net.Conn
	peer    string
	reader  *bufio.Reader
	replica *blockstore.Replica

	mu     sync.Mutex // guards volume, read by CloseVolume
	volume string

	// peerNode is the node the peer's certificate names, and admitted the
	// highest epoch Admit allowed it (apply loop only).
	peerNode  string
	admitted  uint64
	forbidden bool // Admit refused a frame: the loop ends

	wmu  sync.Mutex // guards w and werr
	w    *bufio.Writer
	werr error

	wg sync.WaitGroup // durability requests running off the apply loop

	// Background copy writes and checksums running off the apply loop
	// (runAsync), and the writer of the copies, made at the first.
	copies    sync.WaitGroup
	copySlots chan struct{}
	sumSlots  chan struct{}
	writer    *blockstore.DirectWriter
	cmu       sync.Mutex
	inflight  [][2]int64 // their byte ranges, [start, end)
	copyEpoch uint64     // the epoch of those frames (apply loop only)

	// Kept by the server, under its lock.
	ip      netip.Addr    // counted against MaxConnsPerIP
	unbound *list.Element // in the server's list until the hello is read
}

func newServerConn(s *Server, c net.Conn) *serverConn {
	return &serverConn{srv: s, conn: c, peer: c.RemoteAddr().String(), w: bufio.NewWriterSize(c, 64<<10),
		copySlots: make(chan struct{}, copyDepth), sumSlots: make(chan struct{}, checksumDepth)}
}

func (c *serverConn) serve() {
	defer c.wg.Wait()
	err := c.hello()
	c.srv.bound(c)
	if err != nil {
		c.flush()
		klog.InfoS("Refused replication connection", "peer", c.peer, "err", err)
		return
	}
	klog.V(2).InfoS("Replication connection bound", "peer", c.peer, "volume", c.volume, "epoch", c.replica.Epoch())
	c.applyLoop()
}

// maxHelloPayload bounds what an unbound connection may send.
const maxHelloPayload = 2*maxVolumeID + 1

func (c *serverConn) hello() error {
	c.conn.SetReadDeadline(time.Now().Add(c.srv.opts.HelloTimeout))
	r := bufio.NewReaderSize(c.conn, 64<<10)
	f, err := readFrame(r, maxHelloPayload, nil)
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	c.conn.SetReadDeadline(time.Time{})
	if f.Op != OpHello {
		c.reply(f, StatusNotBound, nil)
		return fmt.Errorf("op %d before hello: %w", f.Op, ErrNotBound)
	}
	rep, err := c.bind(f)
	if err != nil {
		c.replyErr(f, err)
		return err
	}
	c.replica, c.reader = rep, r
	c.replyHello(f, rep.Meta().Incarnation)
	c.flush()
	return nil
}

// bind checks a hello and returns the replica it names.
func (c *serverConn) bind(f Frame) (*blockstore.Replica, error) {
	id, node, err := parseHello(f.Payload)
	if err != nil {
		return nil, err
	}
	if want := c.srv.opts.NodeID; want != "" && node != want {
		return nil, fmt.Errorf("hello for node %q reached %q: %w", node, want, ErrWrongNode)
	}
	rep, ok := c.srv.volumes.Replica(id)
	if !ok {
		return nil, fmt.Errorf("volume %q: %w", id, ErrUnknownVolume)
	}
	c.mu.Lock()
	c.volume = id
	c.mu.Unlock()
	if tc, ok := c.conn.(*tls.Conn); ok {
		if p, err := certs.PeerFromState(tc.ConnectionState()); err == nil {
			c.peerNode = p.Name
		}
	}
	if err := c.admit(f.Epoch); err != nil {
		return nil, err
	}
	if err := rep.ObserveEpoch(f.Epoch); err != nil {
		c.replica = rep // so the refusal carries the replica's epoch
		return nil, fmt.Errorf("volume %s: %w", id, err)
	}
	return rep, nil
}

// admit asks Admit whether the peer may write at epoch, unless it was
// admitted at that epoch or a higher one already.
func (c *serverConn) admit(epoch uint64) error {
	if c.srv.opts.Admit == nil || epoch <= c.admitted {
		return nil
	}
	if err := c.srv.opts.Admit(c.peerNode, c.volume, epoch); err != nil {
		return fmt.Errorf("volume %s, epoch %d, peer %q: %w: %w", c.volume, epoch, c.peerNode, ErrForbidden, err)
	}
	c.admitted = epoch
	return nil
}

func (c *serverConn) boundTo() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.volume
}

// readAhead is how many frames the reader may decode ahead of the
// applier.
const readAhead = 4

// received is one frame read from the connection, or the error that ended
// the stream.
type received struct {
	f   Frame
	err error
}

// applyLoop applies frames in arrival order. The order matters: the
// primary sends overlapping live writes and background copy data in the
// order it wants them applied (I5), so nothing here reorders writes.
//
// A reader goroutine decodes (and, over TLS, decrypts) the next frames
// while this loop waits for the disk. Replies are buffered while more
// requests are already waiting, and written in one go before the loop
// would block for input.
func (c *serverConn) applyLoop() {
	frames := make(chan received, readAhead)
	stop := make(chan struct{})
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		c.readLoop(frames, stop)
	}()
	defer func() {
		// Stop the reader and return the budget of the frames it read
		// that will not be applied. The channel is drained until the
		// reader closes it: a reader waiting in Acquire for budget that
		// those very frames hold gets it, sees the connection closed
		// and ends.
		close(stop)
		c.copies.Wait()
		if c.writer != nil {
			c.writer.Close()
		}
		c.wg.Wait()
		c.conn.Close()
		for r := range frames {
			c.srv.budget.Release(int64(len(r.f.Payload)))
		}
		reader.Wait()
	}()
	for {
		var r received
		select {
		case r = <-frames:
		default:
			c.flush()
			r = <-frames
		}
		if r.err != nil {
			c.srv.budget.Release(int64(len(r.f.Payload)))
			c.readFailed(r.f, r.err)
			return
		}
		if !c.apply(&r.f) {
			c.srv.budget.Release(int64(len(r.f.Payload)))
		}
		if c.forbidden {
			c.flush()
			return
		}
	}
}

// readLoop reads frames until the stream ends or stop closes, and closes
// frames when it returns. The last item it sends carries the error that
// ended the stream.
func (c *serverConn) readLoop(frames chan<- received, stop <-chan struct{}) {
	defer close(frames)
	for {
		f, err := readFrame(c.reader, maxPayload, c.srv.budget.Acquire)
		select {
		case frames <- received{f: f, err: err}:
		case <-stop:
			c.srv.budget.Release(int64(len(f.Payload)))
			return
		}
		if err != nil {
			return
		}
	}
}

func (c *serverConn) readFailed(f Frame, err error) {
	defer c.flush()
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		klog.V(2).InfoS("Replication connection closed", "peer", c.peer, "volume", c.volume)
	case errors.Is(err, ErrBadChecksum), errors.Is(err, ErrBadVersion),
		errors.Is(err, ErrTooLarge), errors.Is(err, ErrBadMagic):
		// The stream cannot be trusted past a bad frame: answer what can
		// be answered and drop the connection.
		c.reply(f, StatusBadRequest, nil)
		klog.InfoS("Dropping replication connection after bad frame", "peer", c.peer, "volume", c.volume, "err", err)
	default:
		klog.InfoS("Replication connection failed", "peer", c.peer, "volume", c.volume, "err", err)
	}
}

// apply applies one frame, or hands an aligned copy write to copyAsync
// and returns true: the frame's budget is then released when the write is
// done. (A copy with FUA, which the primary never sends, is applied here,
// where the reply waits for fdatasync.)
func (c *serverConn) apply(f *Frame) (handedOff bool) {
	if err := c.admit(f.Epoch); err != nil {
		klog.InfoS("Refused replication frame from a peer that is not the primary at its epoch; closing",
			"peer", c.peer, "volume", c.volume, "epoch", f.Epoch, "err", err)
		c.forbidden = true
		c.replyErr(*f, err)
		return false
	}
	if err := validateRequest(f, c.replica.Size()); err != nil { // the replica may grow
		klog.InfoS("Refused replication request", "peer", c.peer, "volume", c.volume, "op", f.Op, "err", err)
		c.reply(*f, StatusBadRequest, nil)
		return false
	}
	if f.Op == OpWrite && f.Flags&(FlagCopy|FlagFUA) == FlagCopy && blockstore.DirectAligned(f.Payload, int64(f.Offset)) {
		c.copyAsync(*f)
		return true
	}
	if f.Op == OpChecksum {
		c.checksumAsync(*f)
		return false
	}
	c.waitCopiesBefore(f)
	var payload []byte
	err := c.replica.Apply(f.Epoch, func() error { return c.applyData(f, &payload) })
	switch {
	case errors.Is(err, blockstore.ErrStaleEpoch):
		klog.V(2).InfoS("Refused request with stale epoch", "peer", c.peer, "volume", c.volume,
			"epoch", f.Epoch, "replicaEpoch", c.replica.Epoch())
		c.replyErr(*f, err)
	case err != nil:
		c.replyErr(*f, err)
	case f.Op == OpSyncStart:
		c.replyErr(*f, c.replica.SetRebuilding(true))
	case f.Op == OpSyncDone:
		c.replyErr(*f, c.replica.SetRebuilding(false))
	case f.Op == OpRead, f.Op == OpChecksum:
		c.replyErr(*f, nil, payload...)
	default:
		c.finish(*f, f.Flags&FlagFUA != 0 || f.Op == OpFlush)
	}
	return false
}

// copyDepth is how many background copy writes a connection keeps in
// flight to the disk, and checksumDepth how many checksums it computes
// beside them.
const (
	copyDepth     = 8
	checksumDepth = 4
)

// copyAsync writes a background copy frame straight to the disk, off the
// apply loop, so the disk writes some chunks while the next are received;
// up to copyDepth are at the disk at once. The frame's budget is released
// when the write is done.
func (c *serverConn) copyAsync(f Frame) {
	c.runAsync(&f, c.copySlots, func(finished func(error)) {
		if c.writer == nil {
			c.writer = c.replica.NewDirectWriter(copyDepth)
		}
		c.writer.WriteAt(f.Epoch, f.Payload, int64(f.Offset), func(err error) {
			c.srv.budget.Release(int64(len(f.Payload)))
			recycleCopyBuffer(f.Payload)
			c.replyErr(f, err)
			finished(err)
		})
	})
}

// checksumAsync answers a checksum request off the apply loop. A resync
// asks for the checksum of every chunk while it copies others; on a
// filesystem that locks the file during a direct write into a hole (ext4
// does), finding the chunk's data waits for that write, and the apply
// loop would wait with it instead of handing the disk the next copy.
func (c *serverConn) checksumAsync(f Frame) {
	c.runAsync(&f, c.sumSlots, func(finished func(error)) {
		go func() {
			var payload []byte
			err := c.replica.Apply(f.Epoch, func() error { return c.applyData(&f, &payload) })
			c.replyErr(f, err, payload...)
			finished(err)
		}()
	})
}

// runAsync starts a frame's work off the apply loop, holding one of slots
// until the work calls finished, after its reply. Order still holds (see
// waitCopiesBefore): no frame runs beside an asynchronous one before it
// that it overlaps, or whose epoch differs. The epoch is checked when the
// work runs, as for any frame. The reply may overtake replies to earlier
// frames; the primary matches replies by id.
func (c *serverConn) runAsync(f *Frame, slots chan struct{}, start func(finished func(error))) {
	off, end := int64(f.Offset), int64(f.Offset)+int64(f.Length)
	c.waitCopiesBefore(f)
	c.copyEpoch = f.Epoch
	slots <- struct{}{}
	c.cmu.Lock()
	c.inflight = append(c.inflight, [2]int64{off, end})
	c.cmu.Unlock()
	c.copies.Add(1)
	epoch, op := f.Epoch, f.Op
	start(func(err error) {
		defer c.copies.Done()
		c.cmu.Lock()
		for i, r := range c.inflight {
			if r[0] == off && r[1] == end {
				c.inflight = append(c.inflight[:i], c.inflight[i+1:]...)
				break
			}
		}
		c.cmu.Unlock()
		<-slots
		if errors.Is(err, blockstore.ErrStaleEpoch) {
			klog.V(2).InfoS("Refused request with stale epoch", "peer", c.peer, "volume", c.volume, "op", op, "epoch", epoch)
		}
		// The apply loop may be waiting for input already: send the
		// reply now, or the primary could wait for it forever.
		c.flush()
	})
}

// waitCopiesBefore waits until the copy writes in flight are done, unless
// f can run beside them: a frame of their epoch on a byte range none of
// them touches (a copy, a live write without FUA, a zero, a read, a
// checksum). Disjoint ranges commute, and copies are whole aligned blocks,
// so no page is shared either. Anything else waits for every one: a flush
// or FUA write must cover them, the end-of-copy marker must follow them,
// and a frame of a higher epoch raises the replica's, after which a copy
// of the epoch before would be refused as stale.
func (c *serverConn) waitCopiesBefore(f *Frame) {
	var off, n int64
	switch {
	case f.Op == OpWrite && f.Flags&FlagFUA == 0:
		off, n = int64(f.Offset), int64(len(f.Payload))
	case f.Op == OpZero, f.Op == OpRead, f.Op == OpChecksum:
		off, n = int64(f.Offset), int64(f.Length)
	default:
		c.copies.Wait()
		return
	}
	c.cmu.Lock()
	clear := f.Epoch == c.copyEpoch || len(c.inflight) == 0
	for _, r := range c.inflight {
		if off < r[1] && r[0] < off+n {
			clear = false
		}
	}
	c.cmu.Unlock()
	if !clear {
		c.copies.Wait()
	}
}

// applyData makes a request's change to the data. It runs under the
// replica's epoch check, so it must not change the metadata itself.
func (c *serverConn) applyData(f *Frame, payload *[]byte) error {
	switch f.Op {
	case OpWrite:
		return c.replica.WriteAt(f.Payload, int64(f.Offset))
	case OpZero:
		return c.replica.PunchHole(int64(f.Offset), int64(f.Length))
	case OpRead:
		*payload = make([]byte, f.Length)
		return c.replica.ReadAt(*payload, int64(f.Offset))
	case OpChecksum:
		sum, err := c.replica.Checksum(int64(f.Offset), int64(f.Length))
		*payload = binary.BigEndian.AppendUint64(nil, sum)
		return err
	}
	return nil
}

// finish replies to a request whose data has been applied. When the
// request needs durability, fdatasync runs off the apply loop so later
// writes keep flowing; it still covers every write applied before it.
func (c *serverConn) finish(f Frame, durable bool) {
	if !durable {
		c.replyErr(f, nil)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.replyErr(f, c.replica.Sync())
		c.flush()
	}()
}

func (c *serverConn) replyErr(f Frame, err error, payload ...byte) {
	switch {
	case err == nil:
		c.reply(f, StatusOK, payload)
	case errors.Is(err, blockstore.ErrStaleEpoch):
		c.reply(f, StatusStaleEpoch, nil)
	case errors.Is(err, blockstore.ErrOutOfRange), errors.Is(err, ErrBadRequest):
		c.reply(f, StatusBadRequest, nil)
	case errors.Is(err, ErrUnknownVolume):
		c.reply(f, StatusUnknownVolume, nil)
	case errors.Is(err, ErrWrongNode):
		c.reply(f, StatusWrongNode, nil)
	case errors.Is(err, ErrForbidden):
		c.reply(f, StatusForbidden, nil)
	default:
		klog.ErrorS(err, "Replica I/O failed", "peer", c.peer, "volume", c.volume, "op", f.Op)
		c.reply(f, StatusIOError, nil)
	}
}

func (c *serverConn) reply(req Frame, st Status, payload []byte) {
	c.send(Frame{Op: OpReply, ID: req.ID, Status: st, Payload: payload})
}

// replyHello accepts a hello, telling the primary the replica's
// incarnation.
func (c *serverConn) replyHello(req Frame, incarnation uint64) {
	c.send(Frame{Op: OpReply, ID: req.ID, Status: StatusOK, Offset: incarnation})
}

// send queues a reply carrying the replica's epoch.
func (c *serverConn) send(f Frame) {
	if c.replica != nil {
		f.Epoch = c.replica.Epoch()
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil {
		_, c.werr = f.WriteTo(c.w)
	}
}

// flush writes buffered replies. After a write error the connection is
// closed, which ends the apply loop.
func (c *serverConn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil && c.w.Buffered() > 0 {
		c.werr = c.w.Flush()
	}
	if c.werr != nil {
		c.conn.Close()
	}
}
