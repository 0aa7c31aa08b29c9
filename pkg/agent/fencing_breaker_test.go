package agent

import (
	"context"
	"testing"

	"github.com/trireme-csi/trireme/internal/testcerts"
	"github.com/trireme-csi/trireme/pkg/nbd"
)

// TestBreakerFrontendConnectionEscapesAttachmentFencing: node n1's
// frontend certificate, while the volume is attached to n1, may open the
// export under a name the primary never fences (the bare volume id, or a
// generation above the current one). Once the volume is published
// elsewhere (generation raised), such a connection must not read or
// write any more: design.md says a bare name is opened "only by an
// operator's certificate", and attached.go that "a frontend left behind
// on a node that lost its attachment cannot write".
func TestBreakerFrontendConnectionEscapesAttachmentFencing(t *testing.T) {
	ca := testcerts.CA(t)
	attachedTo := "n1"
	e := newExportAuthorizer(func(context.Context, string) (attachment, error) { return attachment{attachedTo, 2}, nil })
	a := startPrimary(t, "vol-f", 2)
	exports := primaryExports{a.agent}
	fe := testcerts.Leaf(testcerts.Bundle(t, ca, frontendPeer)) // frontend n1

	held := map[string]nbd.Export{}
	for _, name := range []string{"vol-f", "vol-f?generation=1000", "vol-f?generation=2"} {
		if err := e.authorize(fe, name); err != nil {
			if name == "vol-f?generation=2" {
				t.Fatalf("frontend n1 refused its own attachment's export: %v", err)
			}
			continue // refused to the frontend: fine
		}
		x, err := exports.Lookup(name)
		if err != nil {
			continue
		}
		held[name] = x
	}

	// The volume moves to node n2: ControllerPublish raises the epoch and
	// the attachment generation.
	attachedTo = "n2"
	l := layoutOf("vol-f", 2, a, a)
	l.AttachmentGeneration = 3
	setLayout(t, a, l)

	buf := make([]byte, 4096)
	for name, x := range held {
		if err := x.WriteAt(callCtx(t), buf, 0, true); err == nil {
			t.Errorf("frontend n1's connection opened as %q still writes after the volume was published to n2 (generation 3)", name)
		}
		if err := x.ReadAt(callCtx(t), buf, 0); err == nil {
			t.Errorf("frontend n1's connection opened as %q still reads after the volume was published to n2 (generation 3)", name)
		}
	}
}
