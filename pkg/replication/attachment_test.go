package replication

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestAdmitRefusesOlderAttachmentGenerations(t *testing.T) {
	a := startNode(t, "a", "zone-a", "127.0.0.1")
	const size = 1 << 20
	l := layoutOf(vol, size, 1, "a", a.info(InSync))
	l.AttachmentGeneration = 2
	p := startPrimary(t, a.create(t, vol, size), l, PrimaryOptions{NodeID: "a"})

	tests := []struct {
		epoch, layoutGen uint64 // layout given before the admission
		clientGen        uint64
		want             error
	}{
		{1, 2, 0, nil}, // no generation: administrative access
		{1, 2, 1, ErrStaleAttachment},
		{1, 2, 2, nil},
		{1, 2, 3, nil},
		{2, 3, 2, ErrStaleAttachment},
		{3, 1, 2, ErrStaleAttachment}, // a lower generation lowers nothing
		{3, 1, 3, nil},
	}
	for _, tt := range tests {
		l.Epoch, l.AttachmentGeneration = tt.epoch, tt.layoutGen
		if err := p.UpdateLayout(l); err != nil {
			t.Fatalf("UpdateLayout(epoch %d): %v", tt.epoch, err)
		}
		err := p.Admit(tt.clientGen)
		if !errors.Is(err, tt.want) || (err == nil) != (tt.want == nil) {
			t.Errorf("after epoch %d generation %d: Admit(%d) = %v, want %v",
				tt.epoch, tt.layoutGen, tt.clientGen, err, tt.want)
		}
		if err == nil {
			p.Leave(tt.clientGen)
		}
	}
}

func TestDrainStaleWaitsForCallsAdmittedBeforeTheRaise(t *testing.T) {
	a := startNode(t, "a", "zone-a", "127.0.0.1")
	const size = 1 << 20
	l := layoutOf(vol, size, 1, "a", a.info(InSync))
	l.AttachmentGeneration = 1
	p := startPrimary(t, a.create(t, vol, size), l, PrimaryOptions{NodeID: "a"})
	if err := p.Admit(1); err != nil {
		t.Fatalf("Admit(1): %v", err)
	}
	if err := p.Admit(2); err != nil {
		t.Fatalf("Admit(2): %v", err)
	}

	l.Epoch, l.AttachmentGeneration = 2, 2
	if err := p.UpdateLayout(l); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.DrainStale(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DrainStale with a generation-1 call in progress = %v, want DeadlineExceeded", err)
	}

	done := make(chan error, 1)
	go func() { done <- p.DrainStale(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("DrainStale returned %v before the stale call left", err)
	case <-time.After(20 * time.Millisecond):
	}
	p.Leave(1)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("DrainStale = %v, want nil once the stale call left", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DrainStale still waits after the stale call left")
	}
	p.Leave(2)
}
