package localcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/trireme-csi/trireme/pkg/frontend"
)

// Leftovers lists what the kernel still holds under dir: mount points at
// or below it (from /proc/mounts, most recent first) and loop devices
// whose backing file is below it (from /sys/block/loop*/loop).
func Leftovers(dir string) (mounts, loops []string, err error) {
	dir = resolve(dir)
	if mounts, err = mountsUnder(dir); err != nil {
		return nil, nil, err
	}
	return mounts, loopsUnder(dir), nil
}

// sweep removes the mounts and loop devices left under the system's
// directory: first the filesystems mounted at staging and target paths,
// then, per node, the frontend's loop devices and FUSE mounts. It reports
// what it found, and what it could not remove.
func (s *System) sweep() error {
	mounts, loops, err := s.leftovers()
	if err != nil || len(mounts)+len(loops) == 0 {
		return err
	}
	errs := []error{fmt.Errorf("removing what was left behind under %s: mounts %q, loop devices %q", s.Dir, mounts, loops)}
	bound := boundLoops(loops)
	attach := s.attachDirs()
	for _, m := range mounts {
		if !under(m, attach) {
			errs = append(errs, unmount(m))
		}
	}
	for _, d := range attach {
		errs = append(errs, frontend.Cleanup(d))
	}
	errs = append(errs, waitUnbound(bound, releaseTimeout))
	if mounts, loops, err := s.leftovers(); err != nil || len(mounts)+len(loops) > 0 {
		errs = append(errs, fmt.Errorf("could not remove mounts %q, loop devices %q: %w", mounts, loops, err))
	}
	return errors.Join(errs...)
}

// leftovers is Leftovers of the system's directory, without the
// directory's own shared bind mount.
func (s *System) leftovers() (mounts, loops []string, err error) {
	all, loops, err := Leftovers(s.Dir)
	dir := resolve(s.Dir)
	for _, m := range all {
		if m != dir || !s.shared {
			mounts = append(mounts, m)
		}
	}
	return mounts, loops, err
}

// releaseTimeout bounds how long the kernel may take to release a loop
// device once the filesystem mounted from it is detached: it lets go of
// the device only when that filesystem is gone.
const releaseTimeout = 10 * time.Second

// boundLoops maps loop devices to the path of their backing file.
func boundLoops(devices []string) map[string]string {
	out := map[string]string{}
	for _, dev := range devices {
		if backing, ok := loopBacking(dev); ok {
			out[dev] = backing
		}
	}
	return out
}

// waitUnbound waits until none of the loop devices is bound to the file it
// was bound to. Once its FUSE mount is detached, sysfs shows that file
// under another path, ending the same way (the volume's own directory
// and file).
func waitUnbound(loops map[string]string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var still []string
		for dev, backing := range loops {
			if now, ok := loopBacking(dev); ok && strings.HasSuffix(now, lastElems(backing, 2)) {
				still = append(still, dev)
			}
		}
		if len(still) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loop devices %q still attached after %s", still, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loopBacking returns the backing file of a loop device, if it is bound.
func loopBacking(dev string) (string, bool) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if err != nil {
		return "", false
	}
	return strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)"), true
}

// lastElems returns the last n elements of path, with a leading slash.
func lastElems(path string, n int) string {
	parts := strings.Split(path, "/")
	return "/" + strings.Join(parts[max(len(parts)-n, 0):], "/")
}

// attachDirs are the directories where the nodes' frontends mount their
// FUSE files: the default of the CSI Node service.
func (s *System) attachDirs() []string {
	var dirs []string
	if s.Cluster == nil {
		return nil
	}
	for _, n := range s.Nodes {
		dirs = append(dirs, resolve(filepath.Join(n.DataDir, "csi", "attach")))
	}
	return dirs
}

func unmount(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	return nil
}

// mountsUnder lists the mount points at or below dir, most recent first.
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && isUnder(unescapeMount(f[1]), dir) {
			out = append([]string{unescapeMount(f[1])}, out...)
		}
	}
	return out, nil
}

// loopsUnder lists the loop devices whose backing file is at or below
// dir.
func loopsUnder(dir string) []string {
	devices, _ := filepath.Glob("/sys/block/loop*")
	var out []string
	for _, d := range devices {
		if backing, ok := loopBacking(d); ok && isUnder(backing, dir) {
			out = append(out, "/dev/"+filepath.Base(d))
		}
	}
	return out
}

// unescapeMount undoes the octal escapes /proc/mounts uses for spaces,
// tabs, newlines and backslashes.
func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if isUnder(path, d) {
			return true
		}
	}
	return false
}

func isUnder(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// resolve makes dir absolute with symlinks resolved, as the kernel
// reports paths; it returns dir cleaned when it cannot.
func resolve(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return filepath.Clean(dir)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	return abs
}

// Stragglers lists the processes, other than this one, whose command line
// names a path at or below dir, each as its pid and command line. A node
// agent's children (mount, umount, mkfs) outlive it when they hang on a
// volume's I/O; one that holds the FUSE device the agent served keeps
// the FUSE connection, and the I/O it waits for, alive for good.
func Stragglers(dir string) []string {
	dirs := []string{filepath.Clean(dir), resolve(dir)}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, p := range procs {
		pid := filepath.Base(filepath.Dir(p))
		if pid == strconv.Itoa(os.Getpid()) {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for _, a := range args {
			if under(a, dirs) {
				out = append(out, pid+" "+strings.Join(args, " "))
				break
			}
		}
	}
	return out
}
