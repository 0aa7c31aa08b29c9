package chaos

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// namePrefix starts the name of every network namespace the harness
// creates; the owning test process's pid follows it, so that a later run
// can tell the leftovers of a crashed run from those of a live one.
const namePrefix = "trchaos-"

// rootLinkPrefix starts the name of the one interface the harness puts in
// the root namespace: the veth that lets the test process reach the
// cluster. Interface names are at most 15 bytes: "tc" + pid + "r".
const rootLinkPrefix = "tc"

// network is a private layer-2 segment: a hub namespace holding a bridge,
// and a veth from the bridge to the root namespace (the test process) and
// to each host namespace (the controller, every node).
type network struct {
	pid    int
	subnet net.IP // a.b.c.0 of a /24
	hosts  map[string]*host
}

// host is one network namespace on the segment.
type host struct {
	name string // short name: "ctl", "a1" ...
	ns   string // namespace name
	ip   string
}

// newNetwork creates the hub and the root veth on a /24 not routed on
// this machine yet.
func newNetwork() (*network, error) {
	n := &network{pid: os.Getpid(), hosts: map[string]*host{}}
	subnet, err := freeSubnet(n.pid)
	if err != nil {
		return nil, err
	}
	n.subnet = subnet
	if err := n.createHub(); err != nil {
		return nil, errors.Join(err, n.destroy())
	}
	return n, nil
}

// hubNS is the namespace holding the bridge.
func (n *network) hubNS() string { return n.nsName("hub") }

func (n *network) nsName(short string) string {
	return fmt.Sprintf("%s%d-%s", namePrefix, n.pid, short)
}

func (n *network) rootLink() string { return fmt.Sprintf("%s%dr", rootLinkPrefix, n.pid) }

// addr returns the address with the last byte b on the segment.
func (n *network) addr(b int) string {
	ip := n.subnet.To4()
	return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], b)
}

// RootIP is the test process's address on the segment.
func (n *network) RootIP() string { return n.addr(1) }

func (n *network) createHub() error {
	hub := n.hubNS()
	steps := [][]string{
		{"netns", "add", hub},
		{"-n", hub, "link", "set", "lo", "up"},
		{"-n", hub, "link", "add", "br0", "type", "bridge"},
		{"-n", hub, "link", "set", "br0", "up"},
		{"link", "add", n.rootLink(), "type", "veth", "peer", "name", "v-root", "netns", hub},
		{"-n", hub, "link", "set", "v-root", "master", "br0", "up"},
		{"addr", "add", n.RootIP() + "/24", "dev", n.rootLink()},
		{"link", "set", n.rootLink(), "up"},
	}
	return ipSteps(steps)
}

// addHost creates a namespace with a veth into the bridge and the address
// with last byte b.
func (n *network) addHost(short string, b int) (*host, error) {
	h := &host{name: short, ns: n.nsName(short), ip: n.addr(b)}
	hub, hubEnd := n.hubNS(), "v-"+short
	steps := [][]string{
		{"netns", "add", h.ns},
		{"-n", h.ns, "link", "set", "lo", "up"},
		{"-n", hub, "link", "add", hubEnd, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{"-n", hub, "link", "set", hubEnd, "master", "br0", "up"},
		{"-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"},
		{"-n", h.ns, "link", "set", "eth0", "up"},
	}
	n.hosts[short] = h
	return h, ipSteps(steps)
}

// Cut drops every packet h sends to the address to.
func (h *host) Cut(to string) error {
	return ip("-n", h.ns, "route", "replace", "blackhole", to+"/32")
}

// Heal removes a Cut.
func (h *host) Heal(to string) error {
	err := ip("-n", h.ns, "route", "del", "blackhole", to+"/32")
	if err != nil && strings.Contains(err.Error(), "No such process") {
		return nil
	}
	return err
}

// destroy removes every namespace of this network and the root veth.
// Processes must be gone first, or their namespaces outlive the names.
func (n *network) destroy() error {
	var errs []error
	for _, h := range n.hosts {
		errs = append(errs, delNS(h.ns))
	}
	errs = append(errs, delNS(n.hubNS()))
	if linkExists(n.rootLink()) {
		errs = append(errs, ip("link", "del", n.rootLink()))
	}
	return errors.Join(errs...)
}

// removeLeftovers deletes the namespaces and root veths of earlier runs
// whose test process is gone. Those of live runs are left alone.
func removeLeftovers() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], namePrefix) {
			continue
		}
		rest := strings.TrimPrefix(f[0], namePrefix)
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || alive(pid) {
			continue
		}
		errs = append(errs, ip("netns", "del", f[0]))
	}
	return errors.Join(append(errs, removeRootLinks())...)
}

// removeRootLinks deletes root veths named for a dead test process.
func removeRootLinks() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return err
	}
	var errs []error
	for _, i := range ifs {
		digits := strings.TrimSuffix(strings.TrimPrefix(i.Name, rootLinkPrefix), "r")
		if !strings.HasPrefix(i.Name, rootLinkPrefix) || !strings.HasSuffix(i.Name, "r") {
			continue
		}
		pid, err := strconv.Atoi(digits)
		if err != nil || alive(pid) {
			continue
		}
		errs = append(errs, ip("link", "del", i.Name))
	}
	return errors.Join(errs...)
}

// alive reports whether a process with the pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// delNS deletes a namespace name if it exists.
func delNS(name string) error {
	if _, err := os.Stat("/run/netns/" + name); err != nil {
		return nil
	}
	return ip("netns", "del", name)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// freeSubnet picks a 10.x.y.0/24, derived from the pid, that no route of
// the root namespace covers.
func freeSubnet(pid int) (net.IP, error) {
	routes, err := rootNets()
	if err != nil {
		return nil, err
	}
	for i := range 256 {
		k := pid + i*7919
		cand := net.IPv4(10, byte(200+k%50), byte(k/50%256), 0)
		if !overlaps(cand, routes) {
			return cand, nil
		}
	}
	return nil, errors.New("no free 10.x.y.0/24 for the chaos network")
}

// rootNets lists the networks routed in the root namespace, and the
// addresses of its interfaces.
func rootNets() ([]*net.IPNet, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return nil, fmt.Errorf("ip route: %w", err)
	}
	var nets []*net.IPNet
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		dst := f[0]
		if dst == "local" || dst == "broadcast" || dst == "blackhole" || dst == "unreachable" || dst == "prohibit" {
			if len(f) < 2 {
				continue
			}
			dst = f[1]
		}
		if dst == "default" {
			continue
		}
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if _, nw, err := net.ParseCIDR(dst); err == nil {
			nets = append(nets, nw)
		}
	}
	return nets, nil
}

func overlaps(subnet net.IP, nets []*net.IPNet) bool {
	mine := &net.IPNet{IP: subnet, Mask: net.CIDRMask(24, 32)}
	for _, nw := range nets {
		if nw.Contains(subnet) || mine.Contains(nw.IP) {
			return true
		}
	}
	return false
}

func ipSteps(steps [][]string) error {
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// ip runs the iproute2 command with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
