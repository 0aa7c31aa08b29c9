package demo

import (
	"strings"
	"testing"
	"time"
)

func TestBarFillsInProportion(t *testing.T) {
	tests := []struct {
		done, total int64
		want        string
	}{
		{0, 100, "[>         ]   0%"},
		{47, 100, "[====>     ]  47%"},
		{99, 100, "[=========>]  99%"},
		{100, 100, "[==========] 100%"},
		{150, 100, "[==========] 100%"},
		{-5, 100, "[>         ]   0%"},
		{0, 0, "[          ]    "},
	}
	for _, tt := range tests {
		if got := bar(tt.done, tt.total, 10); got != tt.want {
			t.Errorf("bar(%d, %d) = %q, want %q", tt.done, tt.total, got, tt.want)
		}
	}
}

func TestRateIsMiBPerSecond(t *testing.T) {
	if got := rate(300<<20, 2*time.Second); got != "150 MiB/s" {
		t.Errorf("rate = %q", got)
	}
	if got := rate(1, 0); got != "" {
		t.Errorf("rate over no time = %q, want empty", got)
	}
}

// TestMeterRedrawsOneLineOnATerminal: each show returns to the start of
// the line and covers what a longer line left; print erases the progress
// line before it writes a line that stays.
func TestMeterRedrawsOneLineOnATerminal(t *testing.T) {
	var out strings.Builder
	m := &meter{w: &out, tty: true, interval: time.Second}
	now := time.Unix(0, 0)
	m.show(now, "sync 10%")
	m.show(now, "sync 9%")
	m.print("event")
	m.show(now, "sync 100%")
	m.done("synced")
	want := "\rsync 10%" + "\rsync 9% \b" + "\r       \revent\n" + "\rsync 100%" + "\r         \rsynced\n"
	if got := out.String(); got != want {
		t.Errorf("terminal output = %q, want %q", got, want)
	}
}

// TestMeterPrintsPlainLinesAtMostOncePerInterval: without a terminal
// there is no carriage return, and progress lines are thinned to one per
// interval; lines that stay always print.
func TestMeterPrintsPlainLinesAtMostOncePerInterval(t *testing.T) {
	var out strings.Builder
	m := &meter{w: &out, tty: false, interval: time.Second}
	start := time.Unix(100, 0)
	for i, d := range []time.Duration{0, 300 * time.Millisecond, 999 * time.Millisecond, time.Second, 1500 * time.Millisecond, 2100 * time.Millisecond} {
		m.show(start.Add(d), "p"+string(rune('0'+i)))
	}
	m.print("event")
	m.done("synced")
	want := "p0\np3\np5\nevent\nsynced\n"
	if got := out.String(); got != want {
		t.Errorf("plain output = %q, want %q", got, want)
	}
	if strings.ContainsAny(out.String(), "\r\b") {
		t.Errorf("plain output has terminal control characters")
	}
}
