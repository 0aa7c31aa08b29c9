package frontend

import "errors"

// Errors returned by the frontend. Callers compare with errors.Is.
var (
	// ErrInvalidOptions means AttachOptions are incomplete or
	// inconsistent with the volume.
	ErrInvalidOptions = errors.New("invalid attach options")
	// ErrAlreadyAttached means the volume's mount point is already a
	// mount; a previous agent may have left it (see Cleanup).
	ErrAlreadyAttached = errors.New("volume already attached on this node")
	// ErrDeviceBusy means the loop device is still mounted or open, so
	// the volume cannot be detached yet.
	ErrDeviceBusy = errors.New("device busy")
	// ErrNoFreeLoop means no loop device could be allocated.
	ErrNoFreeLoop = errors.New("no free loop device")
	// ErrDetached means the attachment was detached.
	ErrDetached = errors.New("volume detached")
	// ErrResize means the device could not be grown to the volume's new
	// size.
	ErrResize = errors.New("device resize failed")
)
