package localcluster

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// A mount namespace created while a volume is mounted below the system's
// directory (`ip netns exec`, as the chaos tests start node agents, or
// any container) gets its own copy of that mount. When the root mount is
// private, as it is in many containers, unmounting the volume here leaves
// that copy behind: the filesystem stays alive, and its loop device stays
// busy until the other namespace ends. This is the reason the kubelet's
// directory is a shared mount.
//
// shareMounts does the same for the system's directory: it bind-mounts
// dir on itself and makes it shared, so that the mounts made below it
// are shared too. A namespace created later holds them as slaves (ip
// netns exec makes every mount a slave) or peers, and an unmount here
// reaches it.
func shareMounts(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return errors.Join(fmt.Errorf("make %s a shared mount: %w", dir, err), unshareMounts(dir))
	}
	return nil
}

// unshareMounts removes the bind mount shareMounts made, once nothing is
// mounted below it.
func unshareMounts(dir string) error {
	if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	return nil
}
