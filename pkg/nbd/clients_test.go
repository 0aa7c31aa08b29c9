package nbd

// Tests against the NBD clients Debian ships: qemu-io and qemu-img
// (qemu-utils), nbdinfo and nbdcopy (libnbd-bin), and fio's nbd engine.
// Each test serves in-memory exports on 127.0.0.1 and checks the exact
// bytes the client left behind. A missing client fails the test when CI
// is set and skips it otherwise.

import (
	"github.com/trireme-csi/trireme/internal/testenv"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// clientTimeout bounds one client run; every test here takes well under
// a second.
const clientTimeout = 30 * time.Second

// requireTool returns the path of a client binary, failing the test under
// CI and skipping it elsewhere when the binary is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	testenv.Require(t, name)
	path, _ := exec.LookPath(name)
	return path
}

// runTool runs a client to completion, in a scratch directory, and
// returns its stdout and exit error. The process is killed if it outlives
// clientTimeout.
func runTool(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireTool(t, name), args...)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q timed out; stderr:\n%s", name, args, stderr.String())
	}
	if err != nil {
		err = errors.Join(err, errors.New(stderr.String()))
	}
	return stdout.String(), err
}

// mustRun runs a client that must succeed.
func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runTool(t, name, args...)
	if err != nil {
		t.Fatalf("%s %q: %v\nstdout:\n%s", name, args, err, out)
	}
	return out
}

// serveURI serves exports on 127.0.0.1 and returns the base NBD URI.
func serveURI(t *testing.T, exports Exports) string {
	t.Helper()
	addr, _ := startServer(t, exports, Options{})
	return "nbd://" + addr
}

// randomBytes returns reproducible pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// expectBytes compares two buffers and reports the first difference.
func expectBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: first difference at offset %d: %#x, want %#x", what, i, got[i], want[i])
		}
	}
}

func TestQemuIO(t *testing.T) {
	const size = 4 << 20
	exp := newMemExport(size)
	want := bytes.Repeat([]byte{0x5a}, size)
	exp.fill(want)
	uri := serveURI(t, memExports{"vol": exp}) + "/vol"

	// Writeback caching, so that only "write -f" is sent with FUA.
	mustRun(t, "qemu-io", "-f", "raw", "-t", "writeback", uri,
		"-c", "write -P 0xab 4096 64k",
		"-c", "read -P 0xab 4096 64k",
		"-c", "write -f -P 0xcd 1M 4k",
		"-c", "write -z 2M 64k",
		"-c", "discard 3M 64k",
		"-c", "flush",
		"-c", "aio_write -P 0x11 512k 4k",
		"-c", "aio_write -P 0x22 516k 4k",
		"-c", "aio_flush",
		"-c", "read -P 0x22 516k 4k")

	fillRange(want, 4096, 64<<10, 0xab)
	fillRange(want, 1<<20, 4<<10, 0xcd)
	fillRange(want, 2<<20, 64<<10, 0)
	fillRange(want, 3<<20, 64<<10, 0)
	fillRange(want, 512<<10, 4<<10, 0x11)
	fillRange(want, 516<<10, 4<<10, 0x22)
	expectBytes(t, "export after qemu-io", exp.data(), want)
	expectCounts(t, exp, "FUA writes", exp.fuaWrites.Load(), 1,
		"trims", exp.trims.Load(), 1, "write zeroes", exp.zeroes.Load(), 1)
	if exp.flushes.Load() < 2 {
		t.Errorf("flushes = %d, want at least the two qemu-io asked for", exp.flushes.Load())
	}
	exp.checkIntact(t)
}

func TestQemuIOPatternMismatchFails(t *testing.T) {
	exp := newMemExport(1 << 20)
	uri := serveURI(t, memExports{"vol": exp}) + "/vol"
	out, err := runTool(t, "qemu-io", "-f", "raw", uri, "-c", "read -P 0x77 0 4k")
	if err == nil || !strings.Contains(out, "Pattern verification failed at offset 0, 4096 bytes") {
		t.Errorf("qemu-io verified a pattern the export does not hold: err %v, output:\n%s", err, out)
	}
}

// fillRange sets length bytes of b from off to v.
func fillRange(b []byte, off, length int, v byte) {
	for i := off; i < off+length; i++ {
		b[i] = v
	}
}

func TestQemuImgInfoAndConvert(t *testing.T) {
	const size = 6 << 20
	exp := newMemExport(size)
	uri := serveURI(t, memExports{"vol": exp}) + "/vol"

	var info struct {
		VirtualSize int64  `json:"virtual-size"`
		Format      string `json:"format"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "qemu-img", "info", "--output=json", uri)), &info); err != nil {
		t.Fatal(err)
	}
	if info.VirtualSize != size || info.Format != "raw" {
		t.Errorf("qemu-img info: %+v, want virtual-size %d, format raw", info, size)
	}

	dir := t.TempDir()
	src := randomBytes(size, 1)
	clear(src[1<<20 : 3<<20]) // a zero run for qemu-img to skip or zero
	srcPath := filepath.Join(dir, "src.img")
	if err := os.WriteFile(srcPath, src, 0o600); err != nil {
		t.Fatal(err)
	}
	exp.fill(bytes.Repeat([]byte{0xff}, size)) // the zero run must be written
	mustRun(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", srcPath, uri)
	expectBytes(t, "export after convert to nbd", exp.data(), src)

	dstPath := filepath.Join(dir, "dst.img")
	mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, dstPath)
	dst, err := os.ReadFile(dstPath)
	if err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "file after convert from nbd", dst, src)

	if out := mustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", srcPath, uri); out != "Images are identical.\n" {
		t.Errorf("qemu-img compare: %q", out)
	}
	exp.checkIntact(t)
}

// nbdinfoExport is the part of nbdinfo's JSON output the tests check.
type nbdinfoExport struct {
	Name           string `json:"export-name"`
	Size           int64  `json:"export-size"`
	ReadOnly       bool   `json:"is_read_only"`
	CanFlush       bool   `json:"can_flush"`
	CanFUA         bool   `json:"can_fua"`
	CanTrim        bool   `json:"can_trim"`
	CanZero        bool   `json:"can_zero"`
	CanFastZero    bool   `json:"can_fast_zero"`
	CanMultiConn   bool   `json:"can_multi_conn"`
	CanDF          bool   `json:"can_df"`
	BlockMinimum   int64  `json:"block_size_minimum"`
	BlockPreferred int64  `json:"block_size_preferred"`
	BlockMaximum   int64  `json:"block_size_maximum"`
}

// nbdinfoOutput is nbdinfo's JSON document.
type nbdinfoOutput struct {
	Protocol   string          `json:"protocol"`
	Structured bool            `json:"structured"`
	Exports    []nbdinfoExport `json:"exports"`
}

// wantInfo is what every export of this server advertises.
func wantInfo(name string, size int64) nbdinfoExport {
	return nbdinfoExport{Name: name, Size: size, CanFlush: true, CanFUA: true,
		CanTrim: true, CanZero: true, CanMultiConn: true,
		BlockMinimum: 1, BlockPreferred: 4096, BlockMaximum: 32 << 20}
}

func TestNbdinfo(t *testing.T) {
	base := serveURI(t, memExports{"vol": newMemExport(4 << 20), "scratch": newMemExport(1 << 20)})

	var one nbdinfoOutput
	if err := json.Unmarshal([]byte(mustRun(t, "nbdinfo", "--json", "--no-content", base+"/vol")), &one); err != nil {
		t.Fatal(err)
	}
	want := nbdinfoOutput{Protocol: "newstyle-fixed", Exports: []nbdinfoExport{wantInfo("vol", 4<<20)}}
	if !reflect.DeepEqual(one, want) {
		t.Errorf("nbdinfo --json:\n got %+v\nwant %+v", one, want)
	}

	var list nbdinfoOutput
	if err := json.Unmarshal([]byte(mustRun(t, "nbdinfo", "--list", "--json", "--no-content", base)), &list); err != nil {
		t.Fatal(err)
	}
	want = nbdinfoOutput{Protocol: "newstyle-fixed", Exports: []nbdinfoExport{
		wantInfo("scratch", 1<<20), wantInfo("vol", 4<<20)}}
	if !reflect.DeepEqual(list, want) {
		t.Errorf("nbdinfo --list --json:\n got %+v\nwant %+v", list, want)
	}

	if out := mustRun(t, "nbdinfo", "--size", base+"/scratch"); out != "1048576\n" {
		t.Errorf("nbdinfo --size: %q, want 1048576", out)
	}
	if out, err := runTool(t, "nbdinfo", "--size", base+"/missing"); err == nil {
		t.Errorf("nbdinfo on a missing export succeeded: %q", out)
	}
}

func TestNbdcopyBothDirections(t *testing.T) {
	const size = 8 << 20
	exp := newMemExport(size)
	uri := serveURI(t, memExports{"vol": exp}) + "/vol"
	dir := t.TempDir()
	src := randomBytes(size, 2)
	srcPath := filepath.Join(dir, "src.img")
	if err := os.WriteFile(srcPath, src, 0o600); err != nil {
		t.Fatal(err)
	}

	mustRun(t, "nbdcopy", "--flush", srcPath, uri)
	expectBytes(t, "export after nbdcopy to nbd", exp.data(), src)

	dstPath := filepath.Join(dir, "dst.img")
	mustRun(t, "nbdcopy", uri, dstPath)
	dst, err := os.ReadFile(dstPath)
	if err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "file after nbdcopy from nbd", dst, src)
	if exp.flushes.Load() < 1 {
		t.Errorf("nbdcopy --flush sent no flush")
	}
	exp.checkIntact(t)
}

func TestFioVerify(t *testing.T) {
	const size = 8 << 20
	exp := newMemExport(size)
	uri := serveURI(t, memExports{"vol": exp}) + "/vol"
	out := mustRun(t, "fio", "--name=verify", "--ioengine=nbd", "--uri="+uri,
		"--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=8M",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
		"--output-format=json")

	var report struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"read"`
			Write struct {
				IOBytes int64 `json:"io_bytes"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &report); err != nil {
		t.Fatalf("fio output: %v\n%s", err, out)
	}
	if len(report.Jobs) != 1 {
		t.Fatalf("fio reported %d jobs, want 1", len(report.Jobs))
	}
	job := report.Jobs[0]
	if job.Error != 0 || job.Write.IOBytes != size || job.Read.IOBytes != size {
		t.Errorf("fio job: error %d, wrote %d, verified %d; want 0, %d, %d",
			job.Error, job.Write.IOBytes, job.Read.IOBytes, size, size)
	}
	if n := exp.writes.Load(); n != size/4096 {
		t.Errorf("export saw %d writes, want %d", n, size/4096)
	}
	exp.checkIntact(t)
}
