package kubetest

import "testing"

// sidecarArgs are the flags each CSI sidecar gets besides the socket and
// the kubeconfig: one instance, no leader election, quick retries so a
// test does not wait out production backoffs, and verbose logs.
var sidecarArgs = map[string][]string{
	CSIProvisioner: {"--extra-create-metadata", "--strict-topology", "--retry-interval-start=500ms", "--retry-interval-max=5s"},
	CSIAttacher:    {"--retry-interval-start=500ms", "--retry-interval-max=5s"},
	CSIResizer:     {"--retry-interval-start=500ms", "--retry-interval-max=5s"},
}

// StartSidecar starts a CSI sidecar as a Container (CSIProvisioner, CSIAttacher or
// CSIResizer) against the driver serving on the unix socket at csiSocket,
// talking to the apiserver as the admin user. extra is added to its command
// line. Like a sidecar in a pod, it is started again when it exits: the
// sidecars give up when the driver's socket does not answer within
// --timeout. It skips t, or fails it under CI, when the sidecar is not
// built.
func (cp *ControlPlane) StartSidecar(t testing.TB, name, csiSocket string, extra ...string) *Container {
	t.Helper()
	defaults, ok := sidecarArgs[name]
	if !ok {
		t.Fatalf("%q is not a CSI sidecar", name)
	}
	args := []string{
		"--csi-address=" + csiSocket,
		"--kubeconfig=" + cp.kubeconfig,
		"--leader-election=false",
		"--timeout=30s",
		"--v=4",
	}
	args = append(append(args, defaults...), extra...)
	return StartContainer(t, name, Tool(t, name), args...)
}
