package budget

import (
	"testing"
	"time"
)

func TestAcquireWaitsForRoom(t *testing.T) {
	b := New(100)
	b.Acquire(60)
	got := make(chan struct{})
	go func() { b.Acquire(50); close(got) }()
	select {
	case <-got:
		t.Fatal("acquired 50 bytes with 60 of 100 held")
	case <-time.After(50 * time.Millisecond):
	}
	b.Release(60)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("acquire still blocked after release")
	}
	if b.Held() != 50 {
		t.Fatalf("held %d, want 50", b.Held())
	}
}

func TestOversizedRequestIsAdmittedAlone(t *testing.T) {
	b := New(10)
	b.Acquire(1000)
	if b.Held() != 1000 {
		t.Fatalf("held %d, want 1000", b.Held())
	}
	b.Release(1000)
	if b.Held() != 0 {
		t.Fatalf("held %d, want 0", b.Held())
	}
}
