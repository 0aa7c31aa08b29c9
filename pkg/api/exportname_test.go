package api

import (
	"errors"
	"testing"
)

func TestExportNameRoundTrips(t *testing.T) {
	tests := []struct {
		id         string
		generation uint64
		name       string
	}{
		{"vol-1", 0, "vol-1"},
		{"vol-1", 1, "vol-1?generation=1"},
		{"vol-1", 18446744073709551615, "vol-1?generation=18446744073709551615"},
	}
	for _, tt := range tests {
		if got := ExportName(tt.id, tt.generation); got != tt.name {
			t.Errorf("ExportName(%q, %d) = %q, want %q", tt.id, tt.generation, got, tt.name)
		}
		id, gen, err := ParseExportName(tt.name)
		if id != tt.id || gen != tt.generation || err != nil {
			t.Errorf("ParseExportName(%q) = %q, %d, %v; want %q, %d", tt.name, id, gen, err, tt.id, tt.generation)
		}
	}
}

func TestParseExportNameRefusesBadGenerations(t *testing.T) {
	for _, name := range []string{
		"vol-1?generation=", "vol-1?generation=0", "vol-1?generation=-1", "vol-1?generation=1x",
		"vol-1?generation=18446744073709551616", "vol-1?generation=1?generation=2",
	} {
		if _, _, err := ParseExportName(name); !errors.Is(err, ErrInvalidExportName) {
			t.Errorf("ParseExportName(%q) error = %v, want ErrInvalidExportName", name, err)
		}
	}
}
