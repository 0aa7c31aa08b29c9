package chartargs

import (
	"errors"
	"slices"
	"testing"
)

const manifest = `
apiVersion: v1
kind: ServiceAccount
metadata:
  name: x
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: c
  labels:
    app.kubernetes.io/component: controller
spec:
  template:
    spec:
      containers:
        - name: csi-provisioner
          args: [--csi-address=/csi/csi.sock]
        - name: trireme
          args: [controller, --listen-address=$(POD_IP), --leader-elect, --x=$$(POD_IP), --y=$(NOPE)]
          env:
            - name: POD_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.podIP
            - name: MODE
              value: fast
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: n
  labels:
    app.kubernetes.io/component: node
spec:
  template:
    spec:
      initContainers:
        - name: certs-a
          args: [certs, --node=$(NODE_NAME)]
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
        - name: certs-b
          args: [certs, --frontend=x]
      containers:
        - name: trireme
          args: [node, --node-id=$(NODE_NAME)]
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
`

func TestParseResolvesArgsAsTheKubeletWould(t *testing.T) {
	c, err := Parse([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	pod := Pod{Name: "p", Namespace: "ns", IP: "127.0.0.9", NodeName: "n1"}

	args, env, err := c.Controller.Resolve(pod)
	if err != nil {
		t.Fatal(err)
	}
	wantArgs := []string{"controller", "--listen-address=127.0.0.9", "--leader-elect", "--x=$(POD_IP)", "--y=$(NOPE)"}
	if !slices.Equal(args, wantArgs) {
		t.Errorf("controller args = %q, want %q", args, wantArgs)
	}
	if want := []string{"POD_IP=127.0.0.9", "MODE=fast"}; !slices.Equal(env, want) {
		t.Errorf("controller env = %q, want %q", env, want)
	}

	provisioner, ok := c.ControllerPod["csi-provisioner"]
	if !ok || !slices.Equal(provisioner.Args, []string{"--csi-address=/csi/csi.sock"}) {
		t.Errorf("controller pod's csi-provisioner = %+v, %v", provisioner, ok)
	}
	if len(c.ControllerPod) != 2 || len(c.NodePod) != 1 {
		t.Errorf("pods hold %d and %d containers, want 2 and 1", len(c.ControllerPod), len(c.NodePod))
	}

	args, env, err = c.Node.Resolve(pod)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"node", "--node-id=n1"}; !slices.Equal(args, want) {
		t.Errorf("node args = %q, want %q", args, want)
	}
	if want := []string{"NODE_NAME=n1"}; !slices.Equal(env, want) {
		t.Errorf("node env = %q, want %q", env, want)
	}

	if len(c.ControllerInit) != 0 || len(c.NodeInit) != 2 || c.NodeInit[0].Name != "certs-a" || c.NodeInit[1].Name != "certs-b" {
		t.Fatalf("init containers %+v and %+v, want none and certs-a, certs-b", c.ControllerInit, c.NodeInit)
	}
	if args, _, err := c.NodeInit[0].Resolve(pod); err != nil || !slices.Equal(args, []string{"certs", "--node=n1"}) {
		t.Errorf("first init container's args = %q, %v", args, err)
	}
}

func TestParseRefusesMissingOrDuplicateWorkloads(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want error
	}{
		{"no workloads", "kind: ServiceAccount\n", ErrNotFound},
		{"two controllers", manifest + "---\n" + manifest, ErrDuplicate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.doc)); !errors.Is(err, tt.want) {
				t.Errorf("Parse = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestResolveRefusesUnknownSources(t *testing.T) {
	c, err := Parse([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	c.Node.Env[0].ValueFrom.FieldRef.FieldPath = "metadata.uid"
	if _, _, err := c.Node.Resolve(Pod{}); !errors.Is(err, ErrUnresolved) {
		t.Errorf("Resolve = %v, want %v", err, ErrUnresolved)
	}
}

func TestFlagAndSetFlag(t *testing.T) {
	args := []string{"controller", "--endpoint=unix:///csi/csi.sock", "--leader-elect", "-v=2"}
	tests := []struct {
		name, value string
		found       bool
	}{
		{"endpoint", "unix:///csi/csi.sock", true},
		{"leader-elect", "true", true},
		{"v", "2", true},
		{"kubeconfig", "", false},
		{"controller", "", false},
	}
	for _, tt := range tests {
		if v, ok := Flag(args, tt.name); v != tt.value || ok != tt.found {
			t.Errorf("Flag(%q) = %q, %v; want %q, %v", tt.name, v, ok, tt.value, tt.found)
		}
	}

	got := SetFlag(SetFlag(args, "endpoint", "unix:///tmp/c.sock"), "kubeconfig", "/tmp/kc")
	want := []string{"controller", "--endpoint=unix:///tmp/c.sock", "--leader-elect", "-v=2", "--kubeconfig=/tmp/kc"}
	if !slices.Equal(got, want) {
		t.Errorf("SetFlag = %q, want %q", got, want)
	}
}
