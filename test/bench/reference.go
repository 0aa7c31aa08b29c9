package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// reference is qemu-nbd serving a plain file: the single-copy baseline.
type reference struct {
	cmd *exec.Cmd
	uri string
}

func startQemuNBD(dir string, size int64) (*reference, error) {
	path := filepath.Join(dir, "qemu-nbd.img")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("qemu-nbd", "--format=raw", "--export-name=ref",
		"--bind=127.0.0.1", "--port="+strconv.Itoa(port), "--persistent",
		"--shared=8", "--cache=writeback", "--aio=threads", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu-nbd: %w", err)
	}
	r := &reference{cmd: cmd, uri: fmt.Sprintf("nbd://127.0.0.1:%d/ref", port)}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return r, nil
		}
		if i == 100 {
			r.stop()
			return nil, fmt.Errorf("qemu-nbd did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *reference) stop() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
