package kubetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"k8s.io/klog/v2"
)

// logTail is how many lines of each process's log a failed test prints.
const logTail = 60

// Process is a child process started for a test. Its output goes to a
// log file in the test's temporary directory; it runs in its own process
// group and dies with the test binary.
type Process struct {
	// Name says what the process is, in logs.
	Name string
	// LogPath is the file holding its output.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess starts binary with args. When t ends, the process is
// killed (SIGKILL) and, if t failed, the tail of its log is printed.
func StartProcess(t testing.TB, name, binary string, args ...string) *Process {
	t.Helper()
	p, err := spawn(name, binary, args, filepath.Join(t.TempDir(), logName(name)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("last lines of %s (%s):\n%s", p.Name, p.LogPath, p.Tail(logTail))
			KeepLog(t, p.LogPath)
		}
	})
	return p
}

// LogsDirEnv names the environment variable that, when set to a directory,
// makes a failed test copy each whole process log there before its
// temporary directory is removed.
const LogsDirEnv = "TRIREME_TEST_LOGS"

// KeepLog copies the log file at path into the directory LogsDirEnv
// names, if it is set, below a directory named for the test.
func KeepLog(t testing.TB, path string) {
	dir := os.Getenv(LogsDirEnv)
	if dir == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil {
		dest := filepath.Join(dir, strings.NewReplacer("/", "_").Replace(t.Name()), filepath.Base(filepath.Dir(path))+"-"+filepath.Base(path))
		if err = os.MkdirAll(filepath.Dir(dest), 0o755); err == nil {
			err = os.WriteFile(dest, b, 0o644)
		}
	}
	if err != nil {
		t.Logf("keep log %s: %v", path, err)
	}
}

func logName(name string) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(name) + ".log"
}

// spawn starts binary with args, its output appended to logPath.
func spawn(name, binary string, args []string, logPath string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	klog.V(2).InfoS("Started process", "name", name, "pid", p.cmd.Process.Pid, "log", logPath)
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitError says how the process ended; call it after Exited is closed.
func (p *Process) ExitError() error {
	return fmt.Errorf("%s exited: %v (log %s)", p.Name, p.err, p.LogPath)
}

// Kill stops the process with SIGKILL and waits until it has exited. It
// may be called more than once.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		klog.V(2).InfoS("Kill", "name", p.Name, "pid", p.PID(), "err", err)
	}
	<-p.done
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	return string(bytes.Join(lines[max(len(lines)-n, 0):], []byte("\n")))
}

// FreePort returns a TCP port that is free on ip now. Another process
// could take it before the caller binds it; the caller's process then
// fails to start and says so in its log.
func FreePort(t testing.TB, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// hostPort joins 127.0.0.1 and port.
func hostPort(port int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
