package security

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

// logMark is how far each process log had been written at one moment.
type logMark map[string]int64

// logPaths lists every process log.
func (s *system) logPaths() []string {
	paths := []string{s.Controller.LogPath()}
	for _, n := range s.Nodes {
		paths = append(paths, n.LogPath())
	}
	return paths
}

// markLogs records the current end of every process log.
func (s *system) markLogs() logMark {
	m := logMark{}
	for _, p := range s.logPaths() {
		if fi, err := os.Stat(p); err == nil {
			m[p] = fi.Size()
		}
	}
	return m
}

// logLinesSince returns the lines matching re that the processes logged
// after mark, each prefixed with its log's name.
func (s *system) logLinesSince(mark logMark, re *regexp.Regexp) []string {
	var out []string
	for _, p := range s.logPaths() {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		f.Seek(mark[p], io.SeekStart)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if re.MatchString(sc.Text()) {
				out = append(out, fmt.Sprintf("%s: %s", filepath.Base(p), sc.Text()))
			}
		}
		f.Close()
	}
	return out
}

// failoverLog matches the lines in which the controller or a primary
// takes a replica out of the write path or moves the primary.
var failoverLog = regexp.MustCompile(`Replica faulted|Replicas on dead nodes faulted|Replica fault report answered|Volume failed over|Replica resumed`)
