package demo

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 18, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func TestFirstAckAfterTakesTheEarliestCompletionOfAWriteIssuedLater(t *testing.T) {
	tests := []struct {
		name string
		acks []ack
		kill time.Time
		want ack
		ok   bool
	}{
		{"no writes", nil, at(100), ack{}, false},
		{"only writes issued before the kill", []ack{{at(90), at(2500)}, {at(50), at(60)}}, at(100), ack{}, false},
		{"a write stalled across the kill does not count",
			[]ack{{at(90), at(2500)}, {at(110), at(2510)}, {at(120), at(2505)}}, at(100), ack{at(120), at(2505)}, true},
		{"issued at the very moment of the kill does not count",
			[]ack{{at(100), at(2400)}, {at(101), at(2450)}}, at(100), ack{at(101), at(2450)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := firstAckAfter(tt.acks, tt.kill)
			if ok != tt.ok || got != tt.want {
				t.Errorf("firstAckAfter = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestLongestStallIsTheWidestGapBetweenAcknowledgements(t *testing.T) {
	acks := []ack{{at(0), at(10)}, {at(5), at(30)}, {at(40), at(2540)}, {at(20), at(2500)}, {at(2550), at(2560)}}
	from, d := longestStall(acks)
	if !from.Equal(at(30)) || d != 2470*time.Millisecond {
		t.Errorf("longestStall = %v from %v, want 2.47s from %v", d, from, at(30))
	}
	if _, d := longestStall(acks[:1]); d != 0 {
		t.Errorf("longestStall of one write = %v, want 0", d)
	}
}

// TestPodWritesLeaveWhatTheyRecorded runs the writers on a plain
// directory: every file they say they wrote hashes to what they
// recorded, and the probes timed writes in order.
func TestPodWritesLeaveWhatTheyRecorded(t *testing.T) {
	root := t.TempDir()
	p, err := startPodWrites(root)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for enough writes rather than a fixed time: fsync on a busy
	// disk may take long.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, acks := p.written()
		if len(m) >= 2 && len(acks) >= probes*5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	want, acks := p.written()
	got, _, err := hashTree(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if d := diff(want, got); d != "" {
		t.Errorf("the writers' files differ from their record: %s", d)
	}
	if n := len(want); n < probes+2 {
		t.Errorf("%d files recorded, want the %d probe logs and at least 2 files", n, probes)
	}
	if _, ok := want[filepath.ToSlash(filepath.Join(podWritesDir, "probe-0.log"))]; !ok {
		t.Errorf("no probe log among %v", want)
	}
	if len(acks) < probes*5 {
		t.Errorf("%d probe writes in 30s, want at least %d", len(acks), probes*5)
	}
	for i, a := range acks {
		if a.done.Before(a.issued) || i > 0 && a.done.Before(acks[i-1].done) {
			t.Fatalf("acks out of order at %d: %v", i, acks)
		}
	}
}

func TestProbeLineIsOneFixedSizeRecord(t *testing.T) {
	b := probeLine("probe-1.log", 42, t0)
	want := "probe-1.log write 42 issued 2026-12-04T18:00:00Z"
	if len(b) != probeRecord || string(b[:len(want)]) != want || b[len(b)-1] != '\n' {
		t.Errorf("probeLine = %q", b)
	}
}
