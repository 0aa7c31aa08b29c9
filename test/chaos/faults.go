package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"time"
)

// faultKind is one kind of failure the harness injects.
type faultKind int

const (
	killNode          faultKind = iota // kill -9, restarted later on the same data dir
	stopNode                           // SIGSTOP, SIGCONT later: a gray failure
	cutLink                            // blackhole routes, one way or both
	loseZone                           // kill -9 of every node of a zone
	restartController                  // kill -9 of the controller, started again on its db
	isolateNode                        // cut from every node and the controller, both ways, not from the clients
)

func (k faultKind) String() string {
	return [...]string{"kill", "stop", "cut", "lose-zone", "restart-controller", "isolate"}[k]
}

// fault is one failure: it starts at `at` after the schedule starts and
// heals dur later.
type fault struct {
	kind faultKind
	at   time.Duration
	dur  time.Duration
	// node is a node id, or "primary:N" for the primary of the schedule's
	// N-th volume when the fault starts.
	node string
	zone string
	// peer is the other end of a cut: a node id, "controller" or
	// "client" (the test process); oneWay cuts only what node sends.
	peer   string
	oneWay bool
}

func (f fault) String() string {
	s := fmt.Sprintf("%s@%.1fs+%.1fs", f.kind, f.at.Seconds(), f.dur.Seconds())
	switch f.kind {
	case killNode, stopNode, isolateNode:
		s += " " + f.node
	case cutLink:
		dir := "<->"
		if f.oneWay {
			dir = "->"
		}
		s += " " + f.node + dir + f.peer
	case loseZone:
		s += " " + f.zone
	}
	return s
}

// schedule is the faults of one round, all derived from its seed.
type schedule struct {
	seed   uint64
	faults []fault
	// primaryZone is where each volume's primary is preferred.
	primaryZones []string
	publishTo    []string
}

func (s schedule) String() string {
	var parts []string
	for _, f := range s.faults {
		parts = append(parts, f.String())
	}
	return strings.Join(parts, ", ")
}

// ms returns a duration drawn uniformly from [lo, hi] milliseconds.
func ms(r *rand.Rand, lo, hi int) time.Duration {
	return time.Duration(lo+r.IntN(hi-lo+1)) * time.Millisecond
}

// newSchedule draws one to three faults, sometimes overlapping, from the
// seed. Nothing else of the schedule depends on anything but the seed.
func newSchedule(seed uint64, nodes []string, zones []string, vols int) schedule {
	r := rand.New(rand.NewPCG(seed, 0x7472697265))
	s := schedule{seed: seed}
	for range vols {
		s.primaryZones = append(s.primaryZones, zones[r.IntN(len(zones))])
		s.publishTo = append(s.publishTo, nodes[r.IntN(len(nodes))])
	}
	n := 1 + r.IntN(3)
	for range n {
		s.faults = append(s.faults, drawFault(r, nodes, zones, vols))
	}
	return s
}

func drawFault(r *rand.Rand, nodes, zones []string, vols int) fault {
	f := fault{at: ms(r, 300, 3000)}
	target := func() string {
		if r.IntN(2) == 0 {
			return fmt.Sprintf("primary:%d", r.IntN(vols))
		}
		return nodes[r.IntN(len(nodes))]
	}
	switch p := r.IntN(100); {
	case p < 25:
		f.kind, f.node, f.dur = killNode, target(), ms(r, 1000, 6000)
	case p < 50:
		f.kind, f.node, f.dur = stopNode, target(), ms(r, 500, 5000)
	case p < 75:
		f.kind, f.node, f.dur = cutLink, target(), ms(r, 1000, 6000)
		f.oneWay = r.IntN(2) == 0
		switch q := r.IntN(10); {
		case q < 6:
			f.peer = nodes[r.IntN(len(nodes))]
		case q < 8:
			f.peer = "controller"
		default:
			f.peer = "client"
		}
	case p < 82:
		f.kind, f.zone, f.dur = loseZone, zones[r.IntN(len(zones))], ms(r, 2000, 8000)
	case p < 92:
		f.kind, f.node, f.dur = isolateNode, target(), ms(r, 2000, 6000)
	default:
		f.kind, f.dur = restartController, ms(r, 200, 3000)
	}
	return f
}

// injector applies faults to a cluster and heals them. Kills and stops of
// one node, and cuts of one route, nest: a node restarts when its last
// kill heals.
type injector struct {
	c    *cluster
	vols []*volume
	logf func(format string, args ...any)

	mu     sync.Mutex
	downs  map[*proc]int
	stops  map[*proc]int
	routes map[[2]string]int // (namespace, destination) -> cuts
	errs   []error
}

func newInjector(c *cluster, vols []*volume, logf func(string, ...any)) *injector {
	return &injector{c: c, vols: vols, logf: logf,
		downs: map[*proc]int{}, stops: map[*proc]int{}, routes: map[[2]string]int{}}
}

// run applies every fault of s at its time and heals it after its
// duration; it returns when all have healed.
func (in *injector) run(ctx context.Context, s schedule) {
	start := time.Now()
	var wg sync.WaitGroup
	for _, f := range s.faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sleepUntil(ctx, start.Add(f.at))
			heal := in.apply(ctx, f)
			sleepUntil(ctx, start.Add(f.at+f.dur))
			heal()
		}()
	}
	wg.Wait()
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// apply starts a fault and returns what heals it.
func (in *injector) apply(ctx context.Context, f fault) func() {
	switch f.kind {
	case killNode:
		n := in.resolve(ctx, f.node)
		in.logf("fault: kill -9 %s", n.id)
		return in.down(n.proc)
	case stopNode:
		n := in.resolve(ctx, f.node)
		in.logf("fault: SIGSTOP %s for %s", n.id, f.dur)
		return in.stop(n.proc)
	case cutLink:
		n := in.resolve(ctx, f.node)
		in.logf("fault: %s", strings.Replace(f.String(), f.node, n.id, 1))
		return in.cut(n, f.peer, f.oneWay)
	case isolateNode:
		n := in.resolve(ctx, f.node)
		in.logf("fault: isolate %s from the nodes and the controller for %s; clients still reach it", n.id, f.dur)
		var heals []func()
		for _, o := range in.c.nodes {
			if o != n {
				heals = append(heals, in.cut(n, o.id, false))
			}
		}
		heals = append(heals, in.cut(n, "controller", false))
		return func() {
			for _, h := range heals {
				h()
			}
		}
	case loseZone:
		in.logf("fault: lose %s", f.zone)
		var heals []func()
		for _, n := range in.c.nodesIn(f.zone) {
			heals = append(heals, in.down(n.proc))
		}
		return func() {
			for _, h := range heals {
				h()
			}
		}
	default:
		in.logf("fault: kill -9 the controller for %s", f.dur)
		return in.down(in.c.controller.proc)
	}
}

// resolve turns a fault's node into a node of the cluster.
func (in *injector) resolve(ctx context.Context, name string) *node {
	var vi int
	if _, err := fmt.Sscanf(name, "primary:%d", &vi); err == nil && vi < len(in.vols) {
		if resp, err := in.c.locate(ctx, in.vols[vi].id); err == nil {
			if n := in.c.node(resp.GetLayout().GetPrimary()); n != nil {
				return n
			}
		}
		return in.c.nodes[vi%len(in.c.nodes)]
	}
	return in.c.node(name)
}

// down kills p; the returned function starts it again once no other
// fault holds it down.
func (in *injector) down(p *proc) func() {
	in.mu.Lock()
	in.downs[p]++
	in.mu.Unlock()
	p.kill()
	return func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.downs[p]--
		if in.downs[p] == 0 && !p.running() {
			in.logf("heal: start %s again", p.name)
			if err := p.start(); err != nil {
				in.errs = append(in.errs, err)
			}
		}
	}
}

// stop sends SIGSTOP; the returned function sends SIGCONT once no other
// fault holds the process stopped.
func (in *injector) stop(p *proc) func() {
	in.mu.Lock()
	in.stops[p]++
	in.mu.Unlock()
	p.signal(syscall.SIGSTOP)
	return func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.stops[p]--
		if in.stops[p] == 0 {
			in.logf("heal: SIGCONT %s", p.name)
			p.signal(syscall.SIGCONT)
		}
	}
}

// cut blackholes what n sends to peer, and what peer sends to n unless
// oneWay. The test process's side is never cut: it shares the root
// namespace with the rest of the machine.
func (in *injector) cut(n *node, peer string, oneWay bool) func() {
	var peerHost *host
	peerIP := in.c.net.RootIP()
	switch peer {
	case "controller":
		peerHost = in.c.controller.host
	case "client":
	default:
		peerHost = in.c.node(peer).host
	}
	if peerHost != nil {
		peerIP = peerHost.ip
	}
	if peerHost == n.host {
		return func() {} // a node cut from itself is no fault
	}
	var heals []func()
	heals = append(heals, in.route(n.host, peerIP))
	if !oneWay && peerHost != nil {
		heals = append(heals, in.route(peerHost, n.host.ip))
	}
	return func() {
		for _, h := range heals {
			h()
		}
	}
}

func (in *injector) route(h *host, to string) func() {
	key := [2]string{h.ns, to}
	in.mu.Lock()
	in.routes[key]++
	if in.routes[key] == 1 {
		if err := h.Cut(to); err != nil {
			in.errs = append(in.errs, err)
		}
	}
	in.mu.Unlock()
	return func() {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.routes[key]--
		if in.routes[key] == 0 {
			if err := h.Heal(to); err != nil {
				in.errs = append(in.errs, err)
			}
		}
	}
}

// healAll makes sure every process runs and is not stopped, and no route
// is cut, whatever happened; it returns the errors met on the way.
func (in *injector) healAll() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	for key, n := range in.routes {
		if n > 0 {
			h := in.c.hostByNS(key[0])
			if err := h.Heal(key[1]); err != nil {
				in.errs = append(in.errs, err)
			}
			in.routes[key] = 0
		}
	}
	procs := []*proc{in.c.controller.proc}
	for _, n := range in.c.nodes {
		procs = append(procs, n.proc)
	}
	for _, p := range procs {
		p.signal(syscall.SIGCONT)
		if !p.running() {
			if err := p.start(); err != nil {
				in.errs = append(in.errs, err)
			}
		}
	}
	in.downs, in.stops = map[*proc]int{}, map[*proc]int{}
	errs := in.errs
	in.errs = nil
	return joinErrs(errs)
}

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}
