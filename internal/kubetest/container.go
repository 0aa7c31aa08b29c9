package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

// RestartDelay is how long a Container waits before it starts its
// process again: the kubelet's first back-off is 10s, shortened so that
// tests do not wait it out.
const RestartDelay = time.Second

// Container is a process that is started again whenever it exits, as the
// kubelet restarts a pod's container under restartPolicy Always, until
// the test ends. Every run appends to one log file.
type Container struct {
	name, binary string
	args         []string
	logPath      string

	mu       sync.Mutex
	cur      *Process
	restarts int
	stop     chan struct{}
	stopped  chan struct{}
}

// StartContainer starts binary with args as a Container. When t ends, the
// process is killed and no longer restarted; if t failed, the tail of its
// log is printed.
func StartContainer(t testing.TB, name, binary string, args ...string) *Container {
	t.Helper()
	c := &Container{name: name, binary: binary, args: args,
		logPath: filepath.Join(t.TempDir(), logName(name)),
		stop:    make(chan struct{}), stopped: make(chan struct{})}
	p, err := spawn(name, binary, args, c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	c.cur = p
	go c.supervise()
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			t.Logf("last lines of %s, restarted %d times (%s):\n%s", name, c.Restarts(), c.logPath, c.Process().Tail(logTail))
			KeepLog(t, c.logPath)
		}
	})
	return c
}

// supervise starts the process again each time it exits, until Stop.
func (c *Container) supervise() {
	defer close(c.stopped)
	for {
		p := c.Process()
		select {
		case <-c.stop:
			return
		case <-p.Exited():
		}
		klog.V(2).InfoS("Container exited; restarting", "name", c.name, "pid", p.PID(), "err", p.err, "delay", RestartDelay)
		select {
		case <-c.stop:
			return
		case <-time.After(RestartDelay):
		}
		next, err := spawn(c.name, c.binary, c.args, c.logPath)
		if err != nil {
			appendLog(c.logPath, fmt.Sprintf("restart failed: %v\n", err))
			continue
		}
		c.mu.Lock()
		c.cur = next
		c.restarts++
		c.mu.Unlock()
	}
}

// Process returns the process running now, or the last one to exit.
func (c *Container) Process() *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// Restarts counts how many times the process was started again.
func (c *Container) Restarts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarts
}

// LogPath returns the file every run of the process appends to.
func (c *Container) LogPath() string { return c.logPath }

// Stop kills the process and stops restarting it. It may be called more
// than once.
func (c *Container) Stop() {
	c.mu.Lock()
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.mu.Unlock()
	<-c.stopped
	c.Process().Kill()
}

func appendLog(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(line)
}
