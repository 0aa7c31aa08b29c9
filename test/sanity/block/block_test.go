package block

import (
	"testing"

	csisanity "github.com/trireme-csi/trireme/test/sanity"
)

// TestSanityBlock runs csi-sanity with raw block volumes.
func TestSanityBlock(t *testing.T) { csisanity.Run(t, "block") }
