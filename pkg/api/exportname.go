package api

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// generationParam introduces the attachment generation in an export name.
const generationParam = "?generation="

// ErrInvalidExportName means an NBD export name is neither a volume id
// nor a volume id with an attachment generation.
var ErrInvalidExportName = errors.New("invalid export name")

// ExportName is the NBD export name under which a frontend attached at
// the given attachment generation opens the volume:
// "<volume-id>?generation=<n>". Generation 0 gives the bare volume id.
//
// A bare volume id carries no generation: it is administrative access
// (qemu-io, nbdcopy, backups) and the primary does not fence it. Under
// mutual TLS the NBD server opens a volume only to an operator's
// certificate, or to the frontend of the node the volume is attached to;
// in insecure mode anyone who reaches the data server can use it.
func ExportName(volumeID string, generation uint64) string {
	if generation == 0 {
		return volumeID
	}
	return volumeID + generationParam + strconv.FormatUint(generation, 10)
}

// ParseExportName splits an export name made by ExportName into the
// volume id and the attachment generation, 0 for a bare volume id. It
// does not validate the volume id.
func ParseExportName(name string) (volumeID string, generation uint64, err error) {
	id, gen, found := strings.Cut(name, generationParam)
	if !found {
		return name, 0, nil
	}
	generation, err = strconv.ParseUint(gen, 10, 64)
	if err != nil || generation == 0 {
		return "", 0, fmt.Errorf("%w: %q", ErrInvalidExportName, name)
	}
	return id, generation, nil
}
