package testenv

import (
	"slices"
	"testing"
)

func TestMissing(t *testing.T) {
	got := Missing("sh", "/", "no-such-command-here", "/no/such/path")
	want := []string{"no-such-command-here", "/no/such/path"}
	if !slices.Equal(got, want) {
		t.Fatalf("Missing = %q, want %q", got, want)
	}
}
