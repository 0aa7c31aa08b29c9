package store

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/trireme-csi/trireme/pkg/api"
)

const (
	// MaxNameLen is the longest volume name, in bytes, as in CSI.
	MaxNameLen = 128
	// MaxNodeIDLen is the longest node id, in bytes, as in CSI.
	MaxNodeIDLen = 256
)

// Validate checks the rules every stored volume follows, and returns an
// error wrapping ErrInvalid if one is broken. Every string must be valid
// UTF-8, as CSI's protobuf strings are.
func (v Volume) Validate() error {
	if err := api.ValidateVolumeID(v.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := validateName(v.Name); err != nil {
		return err
	}
	switch {
	case v.Size <= 0:
		return invalidf("volume %s: size %d is not positive", v.ID, v.Size)
	case v.Layout.VolumeID != v.ID:
		return invalidf("volume %s: layout names volume %q", v.ID, v.Layout.VolumeID)
	case v.Layout.Size != v.Size:
		return invalidf("volume %s: layout size %d, volume size %d", v.ID, v.Layout.Size, v.Size)
	case v.MinInSyncReplicas < 0:
		return invalidf("volume %s: minInSyncReplicas %d is negative", v.ID, v.MinInSyncReplicas)
	case !validTime(v.Created):
		return invalidf("volume %s: created %v is out of range", v.ID, v.Created)
	}
	return v.validateStrings()
}

func (v Volume) validateStrings() error {
	strs := []string{v.Fingerprint, v.Layout.Primary, v.Attachment.NodeID}
	for _, r := range v.Layout.Replicas {
		strs = append(strs, r.NodeID, r.Zone, r.Address, string(r.State))
	}
	if !validUTF8(strs...) || !validMap(v.Parameters) {
		return invalidf("volume %s: a field is not valid UTF-8", v.ID)
	}
	return nil
}

// ValidateUpdate checks that next may replace stored. The name cannot
// change, the size cannot go down (replicas never shrink), and neither the layout epoch nor the attachment generation can
// go down: the store holds the record that hands them out, and a lower
// value would let one be handed out twice. It returns an error wrapping
// ErrInvalid. It does not check next.Validate or the revisions.
func ValidateUpdate(stored, next Volume) error {
	switch {
	case next.Name != stored.Name:
		return invalidf("volume %s: name cannot change", next.ID)
	case next.Size < stored.Size:
		return invalidf("volume %s: size %d is below stored size %d: volumes never shrink",
			next.ID, next.Size, stored.Size)
	case next.Layout.Epoch < stored.Layout.Epoch:
		return invalidf("volume %s: epoch %d is below stored epoch %d",
			next.ID, next.Layout.Epoch, stored.Layout.Epoch)
	case next.Attachment.Generation < stored.Attachment.Generation:
		return invalidf("volume %s: attachment generation %d is below stored generation %d",
			next.ID, next.Attachment.Generation, stored.Attachment.Generation)
	case next.Layout.AttachmentGeneration < stored.Layout.AttachmentGeneration:
		return invalidf("volume %s: layout attachment generation %d is below stored %d",
			next.ID, next.Layout.AttachmentGeneration, stored.Layout.AttachmentGeneration)
	}
	return nil
}

// Validate checks the rules every stored node follows, and returns an
// error wrapping ErrInvalid if one is broken.
func (n Node) Validate() error {
	switch {
	case n.ID == "" || len(n.ID) > MaxNodeIDLen:
		return invalidf("node id %q: length %d, want 1 to %d bytes", n.ID, len(n.ID), MaxNodeIDLen)
	case n.CapacityBytes < 0:
		return invalidf("node %s: capacity %d is negative", n.ID, n.CapacityBytes)
	case !validTime(n.LastHeartbeat):
		return invalidf("node %s: last heartbeat %v is out of range", n.ID, n.LastHeartbeat)
	case !validUTF8(n.ID, n.Zone, n.DataAddress, n.APIAddress) || !validMap(n.Topology):
		return invalidf("node %q: a field is not valid UTF-8", n.ID)
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "" || len(name) > MaxNameLen:
		return invalidf("volume name %q: length %d, want 1 to %d bytes", name, len(name), MaxNameLen)
	case !utf8.ValidString(name):
		return invalidf("volume name %q: not valid UTF-8", name)
	}
	return nil
}

// validTime accepts the years that RFC 3339, and so every encoding of the
// backends, can hold.
func validTime(t time.Time) bool {
	y := t.UTC().Year()
	return 0 <= y && y <= 9999
}

func validUTF8(strs ...string) bool {
	for _, s := range strs {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

func validMap(m map[string]string) bool {
	for k, v := range m {
		if !validUTF8(k, v) {
			return false
		}
	}
	return true
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
