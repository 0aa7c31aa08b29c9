package localcluster

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is a child trireme process whose output goes to a log file.
//
// It runs in its own process group, so that a Ctrl-C at the terminal
// reaches only the parent, which then unstages volumes and stops the
// children in order; and it is killed if the parent dies first.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	exitErr error
	stop    sync.Once
}

// spawn starts binary with args, its output appended to logPath.
func spawn(name, binary string, args []string, logPath string) (*process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exitError says why a process that should be running is gone.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited: %v (see %s)", p.name, p.exitErr, p.logPath)
}

// kill stops the process with SIGKILL and waits for it to exit.
func (p *process) kill() {
	p.sendKill()
	<-p.done
}

// sendKill sends SIGKILL, unless the process is already being stopped,
// and returns at once: KillZone signals several processes before it
// waits for any.
func (p *process) sendKill() {
	p.stop.Do(func() { p.cmd.Process.Signal(syscall.SIGKILL) })
}

// terminate asks the process to stop with SIGTERM and waits up to grace
// for it; then it kills it. It returns an error if the process had to be
// killed.
func (p *process) terminate(grace time.Duration) error {
	var err error
	p.stop.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.done
			err = fmt.Errorf("%s (pid %d) ignored SIGTERM for %s and was killed", p.name, p.pid(), grace)
		}
	})
	<-p.done
	return err
}
