package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// hashWorkers is how many files are hashed at once: reads through a
// freshly attached volume each wait on a network round trip.
const hashWorkers = 8

// manifest maps each file of a tree, by slash-separated relative path, to
// the sha256 of its contents; a symbolic link maps to "-> " and its
// target.
type manifest map[string]string

// tree sums up a manifest's source.
type tree struct {
	files int
	bytes int64
}

// defaultSource is the Go toolchain's source tree: real code, some
// eleven thousand files, present wherever the demo can be built.
func defaultSource() (string, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("find the Go source tree with go env GOROOT (or choose a tree to write): %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "src"), nil
}

// hashTree returns the manifest of the tree at root and its size.
func hashTree(ctx context.Context, root string) (manifest, tree, error) {
	paths, links, err := walkTree(root)
	if err != nil {
		return nil, tree{}, err
	}
	m := manifest(links)
	var t tree
	var mu sync.Mutex
	err = forEach(ctx, paths, func(rel string) error {
		sum, n, err := hashFile(filepath.Join(root, rel))
		mu.Lock()
		defer mu.Unlock()
		m[rel], t.files, t.bytes = sum, t.files+1, t.bytes+n
		return err
	})
	return m, t, err
}

// walkTree lists the regular files under root, and reads its symbolic
// links.
func walkTree(root string) (files []string, links map[string]string, err error) {
	links = map[string]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		switch {
		case d.Type().IsRegular():
			files = append(files, filepath.ToSlash(rel))
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(path)
			links[filepath.ToSlash(rel)] = "-> " + target
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("walk %s: %w", root, err)
	}
	return files, links, nil
}

// forEach calls fn on every item from hashWorkers goroutines, and returns
// the first error.
func forEach(ctx context.Context, items []string, fn func(string) error) error {
	work := make(chan string)
	errc := make(chan error, hashWorkers)
	var wg sync.WaitGroup
	for range hashWorkers {
		wg.Go(func() {
			for item := range work {
				if err := fn(item); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	err := feed(ctx, work, items, errc)
	wg.Wait()
	close(errc)
	if err != nil {
		return err
	}
	return <-errc
}

// feed sends items until they run out, a worker fails or ctx ends.
func feed(ctx context.Context, work chan<- string, items []string, errc chan error) error {
	defer close(work)
	for _, item := range items {
		select {
		case work <- item:
		case err := <-errc:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// unpack streams a tar of source into dir with two tar processes, as a
// pod would unpack an archive, then flushes the filesystem: when it
// returns, every byte is on the volume's replicas.
func unpack(ctx context.Context, source, dir string) error {
	pack := exec.CommandContext(ctx, "tar", "-cf", "-", "-C", filepath.Dir(source), filepath.Base(source))
	extract := exec.CommandContext(ctx, "tar", "-xf", "-", "-C", dir)
	var packErr, extractErr strings.Builder
	pack.Stderr, extract.Stderr = &packErr, &extractErr
	pipe, err := pack.StdoutPipe()
	if err != nil {
		return err
	}
	extract.Stdin = pipe
	if err := extract.Start(); err != nil {
		return fmt.Errorf("start tar: %w", err)
	}
	if err := pack.Run(); err != nil {
		extract.Wait()
		return fmt.Errorf("tar -c %s: %w: %s", source, err, lastLines(packErr.String(), 3))
	}
	if err := extract.Wait(); err != nil {
		return fmt.Errorf("tar -x into %s: %w: %s", dir, err, lastLines(extractErr.String(), 3))
	}
	return syncFS(dir)
}

// lastLines returns the last n lines of s, joined by " / ": a failing tar
// may complain once per file.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, " / ")
}

// syncFS flushes the filesystem holding dir to its device.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// diff describes how got differs from want, naming at most a few paths;
// it is empty when they are equal.
func diff(want, got manifest) string {
	var problems []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		switch sum, ok := got[p]; {
		case !ok:
			problems = append(problems, p+" is missing")
		case sum != want[p]:
			problems = append(problems, p+" differs")
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			problems = append(problems, p+" is extra")
		}
	}
	if len(problems) > 5 {
		problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
	}
	return strings.Join(problems, "; ")
}
