package mount

import (
	"testing"

	csisanity "github.com/trireme-csi/trireme/test/sanity"
)

// TestSanityMount runs csi-sanity with filesystem volumes.
func TestSanityMount(t *testing.T) { csisanity.Run(t, "mount") }
