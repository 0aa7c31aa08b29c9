package security

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/internal/nbdwire"
	"github.com/trireme-csi/trireme/pkg/agent"
	"github.com/trireme-csi/trireme/pkg/api"
)

// handshakeDeadline is how long a server of the kind lets a new
// connection negotiate before it closes it.
func handshakeDeadline(k portKind) time.Duration {
	if k == controllerAPI || k == nodeAPI {
		return api.HandshakeTimeout
	}
	return agent.HandshakeTimeout
}

// cutOffSlack is how much later than its deadline a server may close a
// connection on this shared, loaded machine. It is generous: a server
// that does not enforce its deadline keeps the connection for as long as
// bytes trickle in, minutes here.
const cutOffSlack = 20 * time.Second

// trickleInterval is the pause between the bytes a slowloris client
// sends: a TLS ClientHello alone then takes minutes.
const trickleInterval = 250 * time.Millisecond

// slowlorisPerPort is how many trickling connections each port gets.
const slowlorisPerPort = 3

// TestSlowlorisClientsAreCutOff opens connections to every port that
// send a valid start of the port's handshake (a TLS ClientHello; on NBD
// the client flags and NBD_OPT_STARTTLS first) one byte at a time. Each
// server closes them about its handshake deadline after they connected,
// while they are still trickling, and serves new legitimate connections
// and a frontend's reads and writes meanwhile.
func TestSlowlorisClientsAreCutOff(t *testing.T) {
	s := cluster(t)
	hello := clientHello(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var results []trickleResult
	for _, p := range s.ports() {
		for range slowlorisPerPort {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := trickle(ctx, p, hello)
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}()
		}
	}

	client := &legitimateClient{v: s.volumes["A"], region: 8 << 20, blocks: 256, model: map[int64][]byte{}}
	client.run(t, s, 100)
	s.newConnectionsServed(t)
	wg.Wait()

	slices.SortFunc(results, func(a, b trickleResult) int { return strings.Compare(a.port.String(), b.port.String()) })
	logTrickles(t, results)
	for _, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("%s: %v", r.port, r.err)
		case !r.closed:
			t.Errorf("%s: still open %s after connecting, deadline %s", r.port, r.lasted.Round(time.Millisecond), handshakeDeadline(r.port.kind))
		case r.sent >= r.total:
			t.Errorf("%s: the whole handshake start (%d bytes) was sent before the server closed", r.port, r.total)
		}
	}
	client.verify(t, s)
}

// trickleResult is what happened to one slowloris connection.
type trickleResult struct {
	port   port
	lasted time.Duration // from connect to the server closing, or giving up
	closed bool          // the server closed the connection
	sent   int           // bytes trickled before it did
	total  int           // bytes there were to trickle
	err    error         // the attack could not run
}

// trickle connects to p and sends the start of its handshake a byte at a
// time until the server closes the connection, or its deadline and
// cutOffSlack have passed.
func trickle(ctx context.Context, p port, hello []byte) trickleResult {
	r := trickleResult{port: p}
	start := time.Now()
	c, err := net.DialTimeout("tcp", p.addr, ioTimeout)
	if err != nil {
		r.err = err
		return r
	}
	defer c.Close()
	payload := hello
	if p.kind == nbdPort {
		if payload, err = nbdTLSStart(c, hello); err != nil {
			r.err = err
			return r
		}
	}
	r.total = len(payload)
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for ; n < len(payload) && ctx.Err() == nil; n++ {
			if _, err := c.Write(payload[n : n+1]); err != nil {
				return
			}
			time.Sleep(trickleInterval)
		}
	}()
	_, err = readToClose(c, handshakeDeadline(p.kind)+cutOffSlack)
	r.lasted, r.closed = time.Since(start), !isTimeout(err)
	c.Close()
	r.sent = <-sent
	return r
}

// nbdTLSStart reads an NBD server's greeting from c and returns what a
// client sends next to upgrade to TLS: its flags, NBD_OPT_STARTTLS, then
// hello once the server acknowledges.
func nbdTLSStart(c net.Conn, hello []byte) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	g := make([]byte, nbdGreetingSize)
	if _, err := io.ReadFull(c, g); err != nil {
		return nil, fmt.Errorf("read NBD greeting: %w", err)
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(nbdwire.FlagFixedNewstyle|nbdwire.FlagNoZeroes))
	b = append(b, nbdOption(nbdOptStartTLS, nil)...)
	return append(b, hello...), nil
}

// logTrickles logs when each server cut its slowloris clients off.
func logTrickles(t *testing.T, results []trickleResult) {
	var b strings.Builder
	fmt.Fprintf(&b, "slowloris clients, one byte every %s:\n", trickleInterval)
	fmt.Fprintf(&b, "  %-44s %9s %10s %12s\n", "port", "deadline", "cut off", "bytes sent")
	for _, r := range results {
		cut := "never"
		if r.closed {
			cut = r.lasted.Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "  %-44s %9s %10s %6d/%-5d\n", r.port, handshakeDeadline(r.port.kind), cut, r.sent, r.total)
	}
	t.Log(b.String())
}
