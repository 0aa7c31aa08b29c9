package chaos

import (
	"strings"
	"testing"
)

func TestCellRoundTrip(t *testing.T) {
	var p [cellSize]byte
	fillCell(p[:], writeValue(3, 17), 42)
	if got := decodeCell(p[:], 42); got != writeValue(3, 17) {
		t.Fatalf("decode = %s, want w3#17", describeValue(got))
	}
	if got := decodeCell(p[:], 43); got != valueGarbage {
		t.Errorf("decode at another cell = %s, want garbage", describeValue(got))
	}
	p[100] ^= 1
	if got := decodeCell(p[:], 42); got != valueGarbage {
		t.Errorf("decode of a flipped bit = %s, want garbage", describeValue(got))
	}
	if got := decodeCell(make([]byte, cellSize), 42); got != valueZero {
		t.Errorf("decode of zeroes = %s, want zeroes", describeValue(got))
	}
}

// w and r build one-cell operations for the checker tests.
func w(client int, seq uint64, call, ret int64) op {
	return op{client: client, write: true, firstCell: 7, cells: 1, value: writeValue(client, seq), call: call, ret: ret}
}

func r(client int, got uint64, call, ret int64) op {
	return op{client: client, firstCell: 7, cells: 1, got: []uint64{got}, call: call, ret: ret}
}

func unknown(o op) op { o.unknown = true; return o }

func TestCheckHistory(t *testing.T) {
	tests := []struct {
		name string
		ops  []op
		want string // substring of the first finding; empty for none
	}{
		{"read of the acknowledged write", []op{w(1, 1, 0, 10), r(2, writeValue(1, 1), 20, 30), r(0, writeValue(1, 1), 40, 50)}, ""},
		{"read concurrent with a write sees either", []op{w(1, 1, 0, 10), w(1, 2, 20, 40), r(2, writeValue(1, 1), 25, 30)}, ""},
		{"stale read after an acknowledged write", []op{w(1, 1, 0, 10), w(1, 2, 20, 30), r(2, writeValue(1, 1), 40, 50)}, "not linearizable"},
		{"value goes back and forth", []op{w(1, 1, 0, 10), w(1, 2, 20, 100), r(2, writeValue(1, 2), 30, 40), r(2, writeValue(1, 1), 50, 60)}, "not linearizable"},
		{"unknown write may land late", []op{unknown(w(1, 1, 0, 10)), w(1, 2, 20, 30), r(0, writeValue(1, 1), 40, 50)}, ""},
		{"unknown write may never land", []op{w(1, 1, 0, 10), unknown(w(1, 2, 20, 30)), r(0, writeValue(1, 1), 40, 50)}, ""},
		{"acknowledged write lost", []op{w(1, 1, 0, 10), r(0, valueZero, 40, 50)}, "not linearizable"},
		{"garbage during a write is not judged", []op{w(1, 1, 0, 10), r(2, valueGarbage, 5, 8)}, ""},
		{"garbage with no write running", []op{w(1, 1, 0, 10), r(2, valueGarbage, 20, 30)}, "not linearizable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := checkHistory(tt.ops, nil, "")
			switch {
			case tt.want == "" && len(v.findings) > 0:
				t.Fatalf("findings %q, want none", v.findings)
			case tt.want != "" && (len(v.findings) == 0 || !strings.Contains(v.findings[0], tt.want)):
				t.Fatalf("findings %q, want one containing %q", v.findings, tt.want)
			}
		})
	}
}

func TestLostWritesNamesTheLostWrite(t *testing.T) {
	got := lostWrites([]op{w(1, 1, 0, 10), w(1, 2, 20, 30), r(0, writeValue(1, 1), 40, 50)})
	if len(got) != 1 || !strings.Contains(got[0], "ACKNOWLEDGED WRITE LOST: final read w1#1, last acknowledged write w1#2") {
		t.Fatalf("lostWrites = %q", got)
	}
}
