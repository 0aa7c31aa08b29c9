// Package chartargs reads, from the manifests charts/trireme renders, the
// arguments and environment of the trireme containers of the controller
// Deployment and the node DaemonSet. End-to-end tests start the binaries
// with them, so that the flags the chart gives its pods are the flags that
// are tested.
package chartargs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// ContainerName is the name of the container that runs trireme in both the
// controller and the node pods.
const ContainerName = "trireme"

// Component labels of the chart's workloads.
const (
	componentLabel = "app.kubernetes.io/component"
	Controller     = "controller"
	Node           = "node"
)

// Errors of Parse and Resolve.
var (
	ErrNotFound   = errors.New("trireme container not found")
	ErrDuplicate  = errors.New("more than one workload of a component")
	ErrUnresolved = errors.New("environment variable cannot be resolved")
)

// Chart holds the trireme containers the chart renders, and every
// container of each pod by name (the sidecars too).
type Chart struct {
	Controller Container
	Node       Container
	// ControllerPod and NodePod hold every container of the controller
	// and node pods by name, trireme's and the CSI sidecars'.
	ControllerPod map[string]Container
	NodePod       map[string]Container
	// ControllerInit and NodeInit are the pods' init containers, in the
	// order they run: they issue each pod's certificates.
	ControllerInit []Container
	NodeInit       []Container
}

// Container is what one trireme container runs, as the manifest writes it:
// Args still hold $(VAR) references, Env may refer to the pod's fields.
type Container struct {
	Name string
	Args []string
	Env  []corev1.EnvVar
}

// Pod gives the values the downward API would give a container.
type Pod struct {
	Name      string // metadata.name
	Namespace string // metadata.namespace
	IP        string // status.podIP
	NodeName  string // spec.nodeName
	HostIP    string // status.hostIP
}

// DeployManifest is the chart's rendering with default values, from the
// repository root.
const DeployManifest = "deploy/trireme.yaml"

// FromFile parses a rendered manifest file, such as DeployManifest.
func FromFile(path string) (Chart, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Chart{}, err
	}
	return Parse(b)
}

// Render runs `helm template` on chartDir, as release "trireme" in
// namespace, with the given values files, and parses the result.
func Render(helm, chartDir, namespace string, valuesFiles ...string) (Chart, error) {
	args := []string{"template", "trireme", chartDir, "--namespace", namespace}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Chart{}, fmt.Errorf("helm template: %w: %s", err, stderr.Bytes())
	}
	return Parse(out)
}

// Parse finds the controller Deployment and the node DaemonSet, by their
// component label, in a multi-document YAML stream, and returns their
// trireme containers.
func Parse(manifests []byte) (Chart, error) {
	var c Chart
	var found [2]int
	r := yaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Chart{}, err
		}
		component, spec, err := workload(doc)
		if err != nil {
			return Chart{}, err
		}
		switch component {
		case Controller:
			found[0]++
			c.ControllerPod, c.Controller, err = containers(spec)
			c.ControllerInit = initContainers(spec)
		case Node:
			found[1]++
			c.NodePod, c.Node, err = containers(spec)
			c.NodeInit = initContainers(spec)
		}
		if err != nil {
			return Chart{}, fmt.Errorf("%s: %w", component, err)
		}
	}
	for i, name := range []string{Controller, Node} {
		switch {
		case found[i] == 0:
			return Chart{}, fmt.Errorf("%s: %w", name, ErrNotFound)
		case found[i] > 1:
			return Chart{}, fmt.Errorf("%s: %w", name, ErrDuplicate)
		}
	}
	return c, nil
}

// workload returns the component and pod spec of a Deployment or
// DaemonSet document, and "" for any other document.
func workload(doc []byte) (string, *corev1.PodSpec, error) {
	var meta struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return "", nil, err
	}
	component := meta.Metadata.Labels[componentLabel]
	switch {
	case meta.Kind == "Deployment" && component == Controller:
		var d appsv1.Deployment
		err := yaml.UnmarshalStrict(doc, &d)
		return component, &d.Spec.Template.Spec, err
	case meta.Kind == "DaemonSet" && component == Node:
		var d appsv1.DaemonSet
		err := yaml.UnmarshalStrict(doc, &d)
		return component, &d.Spec.Template.Spec, err
	}
	return "", nil, nil
}

// containers returns every container of spec by name, and the trireme
// one.
func containers(spec *corev1.PodSpec) (map[string]Container, Container, error) {
	all := map[string]Container{}
	for _, c := range spec.Containers {
		if c.Name == ContainerName && len(c.Command) > 0 {
			return nil, Container{}, fmt.Errorf("container %q overrides the image's entrypoint", c.Name)
		}
		all[c.Name] = Container{Name: c.Name, Args: c.Args, Env: c.Env}
	}
	trireme, ok := all[ContainerName]
	if !ok {
		return nil, Container{}, ErrNotFound
	}
	return all, trireme, nil
}

// initContainers returns spec's init containers in order.
func initContainers(spec *corev1.PodSpec) []Container {
	var out []Container
	for _, c := range spec.InitContainers {
		out = append(out, Container{Name: c.Name, Args: c.Args, Env: c.Env})
	}
	return out
}

// Resolve returns the arguments and environment ("NAME=value") the
// kubelet would give the container in pod: each variable's field
// reference is read from pod, and each $(NAME) in an argument is replaced
// by the variable's value, as Kubernetes does ($$ stands for $; a
// reference to an undefined variable stays as written). A variable whose
// value comes from anything but a literal or a known pod field is
// ErrUnresolved.
func (c Container) Resolve(pod Pod) (args, env []string, err error) {
	vars := map[string]string{}
	for _, e := range c.Env {
		v, err := envValue(e, pod)
		if err != nil {
			return nil, nil, err
		}
		vars[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	for _, a := range c.Args {
		args = append(args, expand(a, vars))
	}
	return args, env, nil
}

func envValue(e corev1.EnvVar, pod Pod) (string, error) {
	if e.ValueFrom == nil {
		return e.Value, nil
	}
	if e.ValueFrom.FieldRef == nil {
		return "", fmt.Errorf("%w: %s is not a literal or a pod field", ErrUnresolved, e.Name)
	}
	fields := map[string]string{
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
		"status.podIP":       pod.IP,
		"spec.nodeName":      pod.NodeName,
		"status.hostIP":      pod.HostIP,
	}
	v, ok := fields[e.ValueFrom.FieldRef.FieldPath]
	if !ok {
		return "", fmt.Errorf("%w: %s refers to %s", ErrUnresolved, e.Name, e.ValueFrom.FieldRef.FieldPath)
	}
	return v, nil
}

// expand replaces $(NAME) references in s the way the kubelet expands a
// container's arguments.
func expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vars[name]; ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Flag returns the value of --name=value (or -name=value) in args.
func Flag(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := flagValue(a, name); ok {
			return v, true
		}
	}
	return "", false
}

// SetFlag returns args with --name set to value: in place of every
// occurrence of the flag when it is there, at the end otherwise. Tests use
// it to point a socket or a kubeconfig elsewhere and keep every other flag.
func SetFlag(args []string, name, value string) []string {
	out := make([]string, 0, len(args)+1)
	set := false
	for _, a := range args {
		if _, ok := flagValue(a, name); ok {
			if !set {
				out = append(out, "--"+name+"="+value)
				set = true
			}
			continue
		}
		out = append(out, a)
	}
	if !set {
		out = append(out, "--"+name+"="+value)
	}
	return out
}

// flagValue reports whether a is the flag name, as --name=value,
// -name=value or a bare boolean --name.
func flagValue(a, name string) (string, bool) {
	trimmed := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if trimmed == a {
		return "", false
	}
	if trimmed == name {
		return "true", true
	}
	if v, ok := strings.CutPrefix(trimmed, name+"="); ok {
		return v, true
	}
	return "", false
}

// RunInit runs the init containers, in order, with the trireme binary bin,
// as the kubelet would before the pod's containers start. The directories
// their flags name inside the pod are replaced by local ones: --ca-dir by
// caDir (where the CA Secret is mounted) and --dir by tlsDir (the pod's
// tls volume, which the trireme container gets as --tls-dir).
func RunInit(bin string, inits []Container, pod Pod, caDir, tlsDir string) error {
	for _, c := range inits {
		args, env, err := c.Resolve(pod)
		if err != nil {
			return fmt.Errorf("init container %s: %w", c.Name, err)
		}
		args = SetFlag(SetFlag(args, "ca-dir", caDir), "dir", tlsDir)
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("init container %s (%q): %w\n%s", c.Name, args, err, out)
		}
	}
	return nil
}
