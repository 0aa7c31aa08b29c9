package nbd

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/internal/nbdwire"
)

// logLines collects what klog writes while a test runs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

// captureLogs routes klog into a buffer until the test ends. Servers the
// test starts afterwards are closed before the logger is restored.
func captureLogs(t *testing.T) *logLines {
	l := &logLines{}
	klog.SetLogger(funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, args)
	}, funcr.Options{}))
	t.Cleanup(klog.ClearLogger)
	return l
}

// about returns the lines that name the peer address.
func (l *logLines) about(remote string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if strings.Contains(line, `"remote"="`+remote+`"`) {
			out = append(out, line)
		}
	}
	return out
}

func TestEachBadEventLogsOneLineNamingThePeer(t *testing.T) {
	tests := []struct {
		name   string
		client func(c *testClient)
		want   string
	}{
		{"unknown handshake flags", func(c *testClient) {
			c.handshake(1 << 7)
			c.expectClosed()
		}, "client set unknown handshake flags"},
		{"unknown export name", func(c *testClient) {
			c.handshake(clientFixedNewstyle)
			c.sendOption(optExportName, []byte("nope"))
			c.expectClosed()
		}, "unknown export"},
		{"option too long", func(c *testClient) {
			c.handshake(clientFixedNewstyle)
			c.write(appendUint32s(optionBytes(nbdwire.OptGo, nil)[:8], nbdwire.OptGo, 1<<20))
			c.readOptionReply()
			c.expectClosed()
		}, "option payload exceeds 64 KiB"},
		{"silent client", func(c *testClient) {
			time.Sleep(300 * time.Millisecond)
		}, "handshake timed out"},
		{"bad request magic", func(c *testClient) {
			c.connect("vol")
			c.write(make([]byte, requestSize))
			c.expectClosed()
		}, "request does not start with request magic"},
		{"oversized write", func(c *testClient) {
			c.connect("vol")
			c.send(nbdwire.CmdWrite, 0, 1, 0, MaxBlockSize+1, nil)
			c.expectReply(1, errnoInval)
			c.expectClosed()
		}, "write payload exceeds maximum block size"},
		{"truncated write", func(c *testClient) {
			c.connect("vol")
			c.send(nbdwire.CmdWrite, 0, 1, 0, 4096, make([]byte, 100))
		}, "connection closed in the middle of a frame"},
		{"read past end", func(c *testClient) {
			c.connect("vol")
			c.send(nbdwire.CmdRead, 0, 1, testSize, 1, nil)
			c.expectReply(1, errnoInval)
		}, "range past end of export"},
		{"zero length", func(c *testClient) {
			c.connect("vol")
			c.send(nbdwire.CmdTrim, 0, 1, 0, 0, nil)
			c.expectReply(1, errnoInval)
		}, "zero length"},
		{"unknown command", func(c *testClient) {
			c.connect("vol")
			c.send(0x99, 0, 1, 0, 1, nil)
			c.expectReply(1, errnoInval)
		}, "unsupported command"},
		{"invalid flag", func(c *testClient) {
			c.connect("vol")
			c.send(nbdwire.CmdFlush, cmdFlagNoHole, 1, 0, 0, nil)
			c.expectReply(1, errnoInval)
		}, "flags not valid for command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := captureLogs(t)
			_, exports := oneExport()
			s := NewServer(exports, Options{HandshakeTimeout: 100 * time.Millisecond})
			c, done := servePair(t, s)
			tt.client(c)
			remote := c.nc.LocalAddr().String()
			c.nc.Close()
			waitServeConn(t, done)
			lines := logs.about(remote)
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("log lines about %s:\n%s\nwant one containing %q", remote, strings.Join(lines, "\n"), tt.want)
			}
		})
	}
}

func TestExportFailureLogsOnceAndCounts(t *testing.T) {
	logs := captureLogs(t)
	exp := newMemExport(testSize)
	exp.fail = errors.New("replica unreachable")
	s := NewServer(memExports{"vol": exp}, Options{})
	c, done := servePair(t, s)
	c.connect("vol")
	for h := range uint64(5) {
		c.send(nbdwire.CmdRead, 0, h, 0, 512, nil)
		c.expectReply(h, errnoIO)
	}
	c.send(nbdwire.CmdDisc, 0, 9, 0, 0, nil)
	if err := waitServeConn(t, done); err != nil {
		t.Fatalf("ServeConn = %v", err)
	}
	remote := c.nc.LocalAddr().String()
	lines := logs.about(remote)
	if len(lines) != 1 || !strings.Contains(lines[0], "replica unreachable") {
		t.Errorf("log lines:\n%s\nwant one export failure", strings.Join(lines, "\n"))
	}
}
