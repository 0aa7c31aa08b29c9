package frontend

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mountInfoPath lists this process's mounts.
const mountInfoPath = "/proc/self/mountinfo"

// fuseConnections is where fusectl, when mounted, exposes an abort file
// for each FUSE connection.
const fuseConnections = "/sys/fs/fuse/connections"

// mount is one line of /proc/self/mountinfo.
type mount struct {
	major, minor int
	point        string
	fsType       string
}

// readMounts parses /proc/self/mountinfo.
func readMounts() ([]mount, error) {
	f, err := os.Open(mountInfoPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m, ok := parseMountInfo(sc.Text()); ok {
			mounts = append(mounts, m)
		}
	}
	return mounts, sc.Err()
}

// parseMountInfo parses one mountinfo line: id, parent, major:minor,
// root, mount point, options, optional fields, "-", type, source, ...
func parseMountInfo(line string) (mount, bool) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if len(fields) < 7 || sep < 0 || sep+1 >= len(fields) {
		return mount{}, false
	}
	majMin := strings.SplitN(fields[2], ":", 2)
	if len(majMin) != 2 {
		return mount{}, false
	}
	major, err1 := strconv.Atoi(majMin[0])
	minor, err2 := strconv.Atoi(majMin[1])
	if err1 != nil || err2 != nil {
		return mount{}, false
	}
	return mount{major: major, minor: minor, point: unescapeOctal(fields[4]), fsType: fields[sep+1]}, true
}

// unescapeOctal decodes the \ooo escapes the kernel writes for spaces,
// tabs, newlines and backslashes in paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// isMountPoint reports whether path is a mount point.
func isMountPoint(path string) (bool, error) {
	mounts, err := readMounts()
	if err != nil {
		return false, fmt.Errorf("list mounts: %w", err)
	}
	for _, m := range mounts {
		if m.point == path {
			return true, nil
		}
	}
	return false, nil
}

// volumeMounts returns the volume FUSE mounts at or below dir.
func volumeMounts(dir string) ([]mount, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	var found []mount
	for _, m := range mounts {
		if m.fsType == "fuse."+fsType && isUnder(m.point, dir) {
			found = append(found, m)
		}
	}
	return found, nil
}

// isUnder reports whether path is dir or inside it.
func isUnder(path, dir string) bool {
	dir = filepath.Clean(dir)
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unmountVolume unmounts a volume's FUSE file system and waits for its
// server to stop. If the kernel refuses (something still has the file
// open), the mount is detached lazily and its connection aborted, so
// that the server still stops.
func unmountVolume(server *fuse.Server, dir string) error {
	m, found := findMount(dir)
	if err := server.Unmount(); err == nil {
		return nil
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if found {
		abortConnection(m)
	}
	server.Wait()
	return nil
}

// findMount returns the mount at dir.
func findMount(dir string) (mount, bool) {
	mounts, _ := readMounts()
	for _, m := range mounts {
		if m.point == dir {
			return m, true
		}
	}
	return mount{}, false
}

// abortConnection ends a FUSE connection through fusectl, failing every
// request in it; it does nothing where fusectl is not mounted.
func abortConnection(m mount) {
	id := strconv.Itoa(m.major<<20 | m.minor)
	f, err := os.OpenFile(filepath.Join(fuseConnections, id, "abort"), os.O_WRONLY, 0)
	if err != nil {
		return
	}
	defer f.Close()
	f.Write([]byte("1"))
}
