package demo

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestHashTreeListsFilesAndLinks(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sub", "empty"), 0o755)
	os.WriteFile(filepath.Join(root, "a.txt"), []byte("hello\n"), 0o644)
	os.WriteFile(filepath.Join(root, "sub", "b"), nil, 0o644)
	os.Symlink("../a.txt", filepath.Join(root, "sub", "link"))

	m, tr, err := hashTree(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	want := manifest{
		"a.txt":    "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
		"sub/b":    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		"sub/link": "-> ../a.txt",
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("manifest = %v, want %v", m, want)
	}
	if tr != (tree{files: 2, bytes: 6}) {
		t.Errorf("tree = %+v, want 2 files of 6 bytes", tr)
	}
}

func TestDiffNamesWhatDiffers(t *testing.T) {
	want := manifest{"a": "1", "b": "2", "c": "3"}
	tests := []struct {
		name string
		got  manifest
		diff string
	}{
		{"equal", manifest{"a": "1", "b": "2", "c": "3"}, ""},
		{"changed", manifest{"a": "1", "b": "x", "c": "3"}, "b differs"},
		{"missing and extra", manifest{"a": "1", "b": "2", "d": "4"}, "c is missing; d is extra"},
		{"many", manifest{"a": "x", "b": "x", "c": "x", "d": "", "e": "", "f": ""},
			"a differs; b differs; c differs; d is extra; e is extra; and 1 more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := diff(want, tt.got); got != tt.diff {
				t.Errorf("diff = %q, want %q", got, tt.diff)
			}
		})
	}
}

func TestLastLinesKeepsTheEnd(t *testing.T) {
	if got := lastLines("a\nb\nc\nd\n", 2); got != "... / c / d" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines("a\nb", 2); got != "a / b" {
		t.Errorf("lastLines = %q", got)
	}
}

func TestVolumeSizeFitsTwiceTheTree(t *testing.T) {
	for _, bytes := range []int64{0, 1, 127 << 20, 1 << 30} {
		size := volumeSize(tree{bytes: bytes})
		if size < 2*bytes+256<<20 || size%(1<<20) != 0 {
			t.Errorf("volumeSize(%d bytes) = %d", bytes, size)
		}
	}
}
