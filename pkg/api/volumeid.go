package api

import (
	"errors"
	"fmt"
)

// MaxVolumeIDLen is the longest volume id, in bytes.
const MaxVolumeIDLen = 128

// ErrInvalidVolumeID means a volume id breaks the rule ValidateVolumeID
// checks.
var ErrInvalidVolumeID = errors.New("invalid volume id")

// ValidateVolumeID accepts ids of 1 to MaxVolumeIDLen bytes drawn from
// [A-Za-z0-9._-], except "." and "..". Such an id is safe to use as a
// single path element and as an NBD export name, as is.
func ValidateVolumeID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidVolumeID)
	case len(id) > MaxVolumeIDLen:
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrInvalidVolumeID, len(id), MaxVolumeIDLen)
	case id == "." || id == "..":
		return fmt.Errorf("%w: %q", ErrInvalidVolumeID, id)
	}
	for i := 0; i < len(id); i++ {
		if !volumeIDByte(id[i]) {
			return fmt.Errorf("%w: byte %q at offset %d, only [A-Za-z0-9._-] allowed", ErrInvalidVolumeID, id[i], i)
		}
	}
	return nil
}

func volumeIDByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}
