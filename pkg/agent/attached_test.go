package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// startPrimary runs one agent on 127.0.0.1 that is the only replica, and
// primary, of volume id at the given epoch and attachment generation.
func startPrimary(t *testing.T, id string, generation uint64) *testAgent {
	t.Helper()
	a := startAgent(t, "node-1", "127.0.0.1", t.TempDir(), "")
	createReplica(t, a, id, testSize)
	l := layoutOf(id, 1, a, a)
	l.AttachmentGeneration = generation
	setLayout(t, a, l)
	return a
}

func TestLookupRefusesOlderAttachmentGenerations(t *testing.T) {
	a := startPrimary(t, "vol-g", 2)
	exports := primaryExports{a.agent}
	tests := []struct {
		name       string
		want       error
		attachedAt uint64 // generation of the export served, 0 for the bare primary
	}{
		{"vol-g", nil, 0},
		{"vol-g?generation=1", replication.ErrStaleAttachment, 0},
		{"vol-g?generation=2", nil, 2},
		{"vol-g?generation=3", nil, 3},
		{"vol-g?generation=0", nbd.ErrNoExport, 0},
		{"vol-g?generation=x", nbd.ErrNoExport, 0},
		{"vol-h?generation=2", nbd.ErrNoExport, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exp, err := exports.Lookup(tt.name)
			if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
				t.Fatalf("Lookup(%q) error = %v, want %v", tt.name, err, tt.want)
			}
			if errors.Is(tt.want, replication.ErrStaleAttachment) && !errors.Is(err, nbd.ErrPolicy) {
				t.Fatalf("Lookup(%q) error = %v, want it to wrap nbd.ErrPolicy", tt.name, err)
			}
			switch x := exp.(type) {
			case nil:
				if tt.want == nil {
					t.Fatalf("Lookup(%q) = nil export", tt.name)
				}
			case *replication.Primary:
				if tt.attachedAt != 0 {
					t.Errorf("Lookup(%q) = the bare primary, want one attached at %d", tt.name, tt.attachedAt)
				}
			case *attachedExport:
				if x.generation != tt.attachedAt {
					t.Errorf("Lookup(%q) attached at %d, want %d", tt.name, x.generation, tt.attachedAt)
				}
			}
		})
	}
}

// dialAt connects an NBD client to the agent's export of id at an
// attachment generation.
func dialAt(t *testing.T, a *testAgent, id string, generation uint64) (*nbdclient.Client, error) {
	t.Helper()
	addr := a.agent.Endpoints().NBD
	c, err := nbdclient.Dial(callCtx(t), nbdclient.Options{
		Endpoint:     func(context.Context) (string, error) { return addr, nil },
		ExportName:   api.ExportName(id, generation),
		RetryTimeout: callTimeout,
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestNewerAttachmentFencesOlderConnections(t *testing.T) {
	a := startPrimary(t, "vol-f", 1)
	old, err := dialAt(t, a, "vol-f", 1)
	if err != nil {
		t.Fatalf("dial at generation 1: %v", err)
	}
	block := bytes.Repeat([]byte{0x11}, 4096)
	if err := old.WriteAt(callCtx(t), block, 0, false); err != nil {
		t.Fatalf("write at generation 1 before the new publish: %v", err)
	}

	l := layoutOf("vol-f", 2, a, a)
	l.AttachmentGeneration = 2
	setLayout(t, a, l)

	wantEPERM := func(op string, err error) {
		t.Helper()
		var remote *nbdclient.RemoteError
		if !errors.As(err, &remote) || remote.Errno != syscall.EPERM || remote.Command != op {
			t.Errorf("%s at generation 1 = %v, want the server's EPERM", op, err)
		}
	}
	wantEPERM("write", old.WriteAt(callCtx(t), bytes.Repeat([]byte{0x22}, 4096), 4096, false))
	wantEPERM("read", old.ReadAt(callCtx(t), make([]byte, 4096), 0))
	wantEPERM("flush", old.Flush(callCtx(t)))

	if _, err := dialAt(t, a, "vol-f", 1); !errors.Is(err, nbdclient.ErrForbidden) {
		t.Errorf("dial at generation 1 after the new publish = %v, want ErrForbidden", err)
	}
	cur, err := dialAt(t, a, "vol-f", 2)
	if err != nil {
		t.Fatalf("dial at generation 2: %v", err)
	}
	if err := cur.WriteAt(callCtx(t), bytes.Repeat([]byte{0x33}, 4096), 8192, false); err != nil {
		t.Fatalf("write at generation 2: %v", err)
	}

	// A later layout that carries a lower generation lowers nothing.
	l = layoutOf("vol-f", 3, a, a)
	l.AttachmentGeneration = 1
	setLayout(t, a, l)
	wantEPERM("write", old.WriteAt(callCtx(t), bytes.Repeat([]byte{0x44}, 4096), 12288, false))

	want := image(testSize, fill{0x11, 0, 4096}, fill{0x33, 8192, 4096})
	if got := checksum(t, a, "vol-f"); got != want {
		t.Errorf("replica checksum %s, want %s (the stale write must not land)", got, want)
	}
}

func TestServingErrSendsClientsElsewhereOnlyWhenThePrimaryStopped(t *testing.T) {
	tests := []struct {
		err      error
		shutdown bool
	}{
		{fmt.Errorf("x: %w", replication.ErrDeposed), true},
		{replication.ErrClosed, true},
		{fmt.Errorf("x: %w", replication.ErrUnreachable), true},
		{fmt.Errorf("x: %w", replication.ErrDegraded), false},
		{fmt.Errorf("x: %w", replication.ErrStaleAttachment), false},
		{errors.New("disk on fire"), false},
	}
	for _, tt := range tests {
		err := servingErr(tt.err)
		if got := errors.Is(err, nbd.ErrShutdown); got != tt.shutdown || !errors.Is(err, tt.err) {
			t.Errorf("servingErr(%v) = %v: ErrShutdown %v, want %v, keeping the cause", tt.err, err, got, tt.shutdown)
		}
	}
	if servingErr(nil) != nil {
		t.Error("servingErr(nil) is not nil")
	}
}
