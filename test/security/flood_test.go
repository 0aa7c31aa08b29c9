package security

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/agent"
)

// floodConns is how many half-open connections the flood holds.
const floodConns = 1000

// floodSources are the loopback addresses the flood comes from: many
// attackers, each under the servers' per-address limits, so that what is
// tested is how the servers bound connections that never finish their
// handshake.
const floodSources = 50

// legitimateOps is how many operations each legitimate client does per
// phase, half 4 KiB writes and half 4 KiB reads.
const legitimateOps = 2000

// TestHalfOpenFloodLeavesLegitimateClientsServed holds 1,000 half-open
// connections spread over every port (half connect and stay silent, half
// send a TLS ClientHello, after NBD_OPT_STARTTLS on NBD, and stay silent;
// a connection the server closes is made again) while two frontends do
// 4 KiB writes and reads on volumes A and B. Every operation succeeds and
// reads back what was written; after the flood every server accepts new
// legitimate connections and the InSync replicas agree. The frontends'
// latency before and during the flood is logged, not judged: this
// machine is shared.
func TestHalfOpenFloodLeavesLegitimateClientsServed(t *testing.T) {
	s := cluster(t)
	raiseFDLimit(t, 4*floodConns)
	clients := []*legitimateClient{
		{v: s.volumes["A"], region: 16 << 20, blocks: 1024, model: map[int64][]byte{}},
		{v: s.volumes["B"], region: 16 << 20, blocks: 1024, model: map[int64][]byte{}},
	}
	before := runClients(t, s, clients)
	load := machine()

	mark := s.markLogs()
	f := startFlood(t, s.ports(), clientHello(t))
	if !f.waitEstablished(time.Minute) {
		f.stop()
		t.Fatalf("the flood could not connect every slot within a minute: %s", f)
	}
	// By now the servers have begun closing the first connections at
	// their handshake deadline, and the flood makes them again.
	time.Sleep(agent.HandshakeTimeout)
	during := runClients(t, s, clients)
	f.stop()

	logLatencies(t, load, f, before, during)
	if lines := s.logLinesSince(mark, failoverLog); len(lines) > 0 {
		t.Logf("faults and failovers during the flood:\n%s", strings.Join(lines, "\n"))
	}
	s.newConnectionsServed(t)
	for _, c := range clients {
		c.verify(t, s)
		s.checkReplicasAgree(t, c.v)
	}
}

// runClients runs the clients at once, legitimateOps each, and returns
// all their latencies.
func runClients(t *testing.T, s *system, clients []*legitimateClient) latencies {
	t.Helper()
	var wg sync.WaitGroup
	results := make([]latencies, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.run(t, s, legitimateOps)
		}()
	}
	wg.Wait()
	var all latencies
	for _, r := range results {
		all.reads = append(all.reads, r.reads...)
		all.writes = append(all.writes, r.writes...)
	}
	if t.Failed() {
		t.FailNow()
	}
	return all
}

// flood holds half-open connections, one per slot, making a slot's
// connection again when the server closes it.
type flood struct {
	slots     []floodSlot
	hello     []byte
	done      chan struct{}
	wg        sync.WaitGroup
	open      atomic.Int64 // connections open now
	peak      atomic.Int64 // most open at once
	made      atomic.Int64 // connections made
	closed    atomic.Int64 // connections the servers closed
	dialErrs  atomic.Int64 // connections the servers did not accept
	connected atomic.Int64 // slots that have connected at least once
}

// floodSlot is one half-open connection's target and behaviour.
type floodSlot struct {
	port   port
	hello  bool // sends a ClientHello before its silence
	source net.IP
}

// startFlood spreads floodConns slots over the ports, alternating silent
// and ClientHello connections, and starts them.
func startFlood(t *testing.T, ports []port, hello []byte) *flood {
	t.Helper()
	f := &flood{hello: hello, done: make(chan struct{})}
	for i := range floodConns {
		f.slots = append(f.slots, floodSlot{
			port:   ports[i%len(ports)],
			hello:  (i/len(ports))%2 == 1,
			source: net.IPv4(127, 0, 0, byte(10+i%floodSources)),
		})
	}
	for _, sl := range f.slots {
		f.wg.Add(1)
		go f.hold(sl)
	}
	t.Cleanup(f.stop)
	return f
}

// hold keeps the slot's connection open until the flood stops.
func (f *flood) hold(sl floodSlot) {
	defer f.wg.Done()
	first := true
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: sl.source}}
	for !f.stopped() {
		c, err := d.Dial("tcp", sl.port.addr)
		if err != nil {
			f.dialErrs.Add(1)
			f.pause()
			continue
		}
		f.made.Add(1)
		if first {
			f.connected.Add(1)
			first = false
		}
		f.countOpen(1)
		if f.holdOpen(c, sl) {
			f.closed.Add(1)
		}
		f.countOpen(-1)
		c.Close()
		f.pause()
	}
}

// holdOpen sends the slot's opening, if any, and then reads until the
// server closes the connection, which it reports, or the flood stops.
func (f *flood) holdOpen(c net.Conn, sl floodSlot) bool {
	if sl.hello {
		payload := f.hello
		if sl.port.kind == nbdPort {
			var err error
			if payload, err = nbdTLSStart(c, f.hello); err != nil {
				return true
			}
		}
		if _, err := c.Write(payload); err != nil {
			return true
		}
	}
	br := bufio.NewReader(c)
	for !f.stopped() {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := br.ReadByte(); err != nil && !isTimeout(err) {
			return true
		}
	}
	return false
}

// pause waits a little before a slot connects again, so that the flood
// holds connections rather than opening them in a tight loop.
func (f *flood) pause() {
	select {
	case <-f.done:
	case <-time.After(100 * time.Millisecond):
	}
}

func (f *flood) stopped() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

func (f *flood) countOpen(d int64) {
	n := f.open.Add(d)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			return
		}
	}
}

// waitEstablished waits until every slot has connected once.
func (f *flood) waitEstablished(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for f.connected.Load() < int64(len(f.slots)) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// stop ends the flood and waits for its connections to close. It is
// safe to call more than once.
func (f *flood) stop() {
	select {
	case <-f.done:
	default:
		close(f.done)
	}
	f.wg.Wait()
}

func (f *flood) String() string {
	return fmt.Sprintf("%d slots, %d connected at least once; %d connections made, at most %d open at once, "+
		"%d closed by the servers, %d connection attempts failed",
		len(f.slots), f.connected.Load(), f.made.Load(), f.peak.Load(), f.closed.Load(), f.dialErrs.Load())
}

// raiseFDLimit raises the soft limit on open files to at least n, up to
// the hard limit, until t ends. The node agents started earlier keep
// their own limits.
func raiseFDLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Fatalf("the hard limit on open files is %d; the flood needs %d", lim.Max, n)
	}
	saved := lim
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
			t.Errorf("restore the limit on open files: %v", err)
		}
	})
}

// machineState describes the machine when the figures were measured.
type machineState struct {
	cpus    int
	kernel  string
	loadavg string
}

func machine() machineState {
	m := machineState{cpus: runtime.NumCPU(), kernel: "unknown", loadavg: "unknown"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.loadavg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// logLatencies logs the legitimate clients' latencies before and during
// the flood as a table.
func logLatencies(t *testing.T, m machineState, f *flood, before, during latencies) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "legitimate NBD clients (2 frontends, 4 KiB, over TLS), %d CPUs, kernel %s, load average %s before the flood:\n",
		m.cpus, m.kernel, m.loadavg)
	fmt.Fprintf(&b, "  %-32s %-6s %5s %9s %9s %9s\n", "phase", "op", "ops", "p50", "p99", "max")
	for _, row := range []struct {
		phase, op string
		d         []time.Duration
	}{
		{"before the flood", "write", before.writes}, {"before the flood", "read", before.reads},
		{fmt.Sprintf("during %d half-open conns", floodConns), "write", during.writes},
		{fmt.Sprintf("during %d half-open conns", floodConns), "read", during.reads},
	} {
		p50, p99, max := percentiles(row.d)
		fmt.Fprintf(&b, "  %-32s %-6s %5d %9s %9s %9s\n", row.phase, row.op, len(row.d), ms(p50), ms(p99), ms(max))
	}
	fmt.Fprintf(&b, "flood: %s; load average after: %s\n", f, machine().loadavg)
	t.Log(b.String())
}

// percentiles returns the median, 99th percentile and maximum of d.
func percentiles(d []time.Duration) (p50, p99, max time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p int) time.Duration { return s[(len(s)-1)*p/100] }
	return at(50), at(99), s[len(s)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }
