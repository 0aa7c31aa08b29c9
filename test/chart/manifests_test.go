package chart

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/trireme-csi/trireme/internal/chartargs"
	"github.com/trireme-csi/trireme/pkg/csi"
)

// socketDir is where every pod mounts the plugin's socket directory.
const socketDir = "/csi"

// sidecarNames are the containers that talk to the plugin over its socket.
var sidecarNames = []string{"csi-provisioner", "csi-attacher", "csi-resizer", "liveness-probe", "node-driver-registrar"}

func TestHelmLint(t *testing.T) {
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", chartDir}
			for _, f := range files {
				args = append(args, "--values", f)
			}
			helm(t, args...)
		})
	}
}

func TestSchemaRefusesWrongValues(t *testing.T) {
	tests := []struct{ name, set string }{
		{"unknown StorageClass parameter", "storageClasses[0].parameters.replica=3"},
		{"too many replicas", "storageClasses[0].parameters.replicas=6"},
		{"unsupported filesystem", "storageClasses[0].parameters.fsType=btrfs"},
		{"unknown top-level value", "replicaCount=3"},
		{"container without requests", "node.resources.requests=null"},
		{"duration without unit", "controller.heartbeatTimeout=5"},
		{"optional duration without unit", "node.fenceTimeout=4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(templateArgs(nil), "--set", tt.set)
			if _, err := runHelm(t, args...); err == nil {
				t.Errorf("helm template --set %s succeeded; the schema should refuse it", tt.set)
			}
		})
	}
}

// podSpecs returns the pod spec of each workload by component.
func podSpecs(t *testing.T, objs []runtime.Object) map[string]*corev1.PodSpec {
	t.Helper()
	return map[string]*corev1.PodSpec{
		chartargs.Controller: &only[*appsv1.Deployment](t, objs).Spec.Template.Spec,
		chartargs.Node:       &only[*appsv1.DaemonSet](t, objs).Spec.Template.Spec,
	}
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// mountSource returns the volume mounted at dir in c.
func mountSource(c *corev1.Container, dir string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

func TestSidecarsUseThePluginSocket(t *testing.T) {
	forEachValueSet(t, func(t *testing.T, objs []runtime.Object) {
		for component, spec := range podSpecs(t, objs) {
			plugin := container(t, spec, chartargs.ContainerName)
			endpointFlag := map[string]string{chartargs.Controller: "endpoint", chartargs.Node: "csi-endpoint"}[component]
			endpoint, _ := chartargs.Flag(plugin.Args, endpointFlag)
			socket, ok := strings.CutPrefix(endpoint, "unix://")
			if !ok || path.Dir(socket) != socketDir {
				t.Fatalf("%s: --%s=%q, want a unix socket in %s", component, endpointFlag, endpoint, socketDir)
			}
			pluginMount, ok := mountSource(plugin, socketDir)
			if !ok {
				t.Fatalf("%s: plugin container does not mount %s", component, socketDir)
			}

			sidecars := 0
			for i := range spec.Containers {
				c := &spec.Containers[i]
				if !slices.Contains(sidecarNames, c.Name) {
					continue
				}
				sidecars++
				if addr, _ := chartargs.Flag(c.Args, "csi-address"); addr != socket {
					t.Errorf("%s/%s: --csi-address=%q, want %q", component, c.Name, addr, socket)
				}
				if m, ok := mountSource(c, socketDir); !ok || m.Name != pluginMount.Name {
					t.Errorf("%s/%s: %s is volume %q, want the plugin's %q", component, c.Name, socketDir, m.Name, pluginMount.Name)
				}
			}
			if sidecars == 0 {
				t.Errorf("%s: no sidecars", component)
			}
		}
	})
}

func TestControllerRunsTheSidecarsTheDriverNeeds(t *testing.T) {
	tests := []struct {
		values []string
		want   []string
	}{
		{nil, []string{"trireme", "csi-provisioner", "csi-attacher", "csi-resizer", "liveness-probe"}},
		{[]string{customValues}, []string{"trireme", "csi-provisioner", "csi-attacher", "liveness-probe"}},
	}
	for _, tt := range tests {
		spec := podSpecs(t, render(t, tt.values...))[chartargs.Controller]
		var got []string
		for _, c := range spec.Containers {
			got = append(got, c.Name)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("values %v: controller containers %q, want %q", tt.values, got, tt.want)
		}
		provisioner := container(t, spec, "csi-provisioner")
		for _, flag := range []string{"--extra-create-metadata", "--leader-election"} {
			if !slices.Contains(provisioner.Args, flag) {
				t.Errorf("values %v: csi-provisioner lacks %s", tt.values, flag)
			}
		}
	}
}

func TestNodePluginIsPrivilegedWithBidirectionalKubeletDir(t *testing.T) {
	kubeletDirs := map[string]string{"default": "/var/lib/kubelet", "custom": "/var/lib/k0s/kubelet"}
	dataDirs := map[string]string{"default": "/var/lib/trireme", "custom": "/mnt/disks/trireme"}
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) {
			spec := podSpecs(t, render(t, files...))[chartargs.Node]
			plugin := container(t, spec, chartargs.ContainerName)
			if sc := plugin.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
				t.Error("node plugin is not privileged")
			}
			if !spec.HostNetwork {
				t.Error("node plugin is not on the host's network")
			}
			wantMounts := []struct {
				dir, hostPath string
				propagation   corev1.MountPropagationMode
			}{
				{kubeletDirs[name], kubeletDirs[name], corev1.MountPropagationBidirectional},
				{"/dev", "/dev", ""},
				{dataDirs[name], dataDirs[name], ""},
			}
			for _, w := range wantMounts {
				m, ok := mountSource(plugin, w.dir)
				if !ok {
					t.Errorf("node plugin does not mount %s", w.dir)
					continue
				}
				if got := propagation(m); got != w.propagation && !(w.propagation == "" && got == corev1.MountPropagationNone) {
					t.Errorf("%s: propagation %q, want %q", w.dir, got, w.propagation)
				}
				if hp := hostPath(spec, m.Name); hp != w.hostPath {
					t.Errorf("%s: host path %q, want %q", w.dir, hp, w.hostPath)
				}
			}
			if dataDir, _ := chartargs.Flag(plugin.Args, "data-dir"); dataDir != dataDirs[name] {
				t.Errorf("--data-dir=%q, want %q", dataDir, dataDirs[name])
			}
		})
	}
}

func propagation(m corev1.VolumeMount) corev1.MountPropagationMode {
	if m.MountPropagation == nil {
		return ""
	}
	return *m.MountPropagation
}

func hostPath(spec *corev1.PodSpec, volume string) string {
	for _, v := range spec.Volumes {
		if v.Name == volume && v.HostPath != nil {
			return v.HostPath.Path
		}
	}
	return ""
}

func TestNodeReadinessProbesTheDataServer(t *testing.T) {
	forEachValueSet(t, func(t *testing.T, objs []runtime.Object) {
		plugin := container(t, podSpecs(t, objs)[chartargs.Node], chartargs.ContainerName)
		p := plugin.ReadinessProbe
		if p == nil || p.TCPSocket == nil {
			t.Fatalf("readiness probe %+v, want a TCP probe", p)
		}
		port, _ := chartargs.Flag(plugin.Args, "replication-port")
		var probed string
		for _, cp := range plugin.Ports {
			if cp.Name == p.TCPSocket.Port.String() || p.TCPSocket.Port.IntValue() == int(cp.ContainerPort) {
				probed = cp.Name + ":" + strconv.Itoa(int(cp.ContainerPort))
			}
		}
		if want := "replication:" + port; probed != want {
			t.Errorf("readiness probes %q, want the data server at %q", probed, want)
		}
	})
}

func TestRegistrarPathMatchesTheDriverName(t *testing.T) {
	kubeletDirs := map[string]string{"default": "/var/lib/kubelet", "custom": "/var/lib/k0s/kubelet"}
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) {
			objs := render(t, files...)
			spec := podSpecs(t, objs)[chartargs.Node]
			registrar := container(t, spec, "node-driver-registrar")
			pluginDir := kubeletDirs[name] + "/plugins/" + csi.DriverName
			if got, _ := chartargs.Flag(registrar.Args, "kubelet-registration-path"); got != pluginDir+"/csi.sock" {
				t.Errorf("--kubelet-registration-path=%q, want %q", got, pluginDir+"/csi.sock")
			}
			m, _ := mountSource(registrar, socketDir)
			if hp := hostPath(spec, m.Name); hp != pluginDir {
				t.Errorf("registrar's %s is host path %q, want %q", socketDir, hp, pluginDir)
			}
			m, _ = mountSource(registrar, "/registration")
			if hp := hostPath(spec, m.Name); hp != kubeletDirs[name]+"/plugins_registry" {
				t.Errorf("registration dir is host path %q", hp)
			}

			driver := only[*storagev1.CSIDriver](t, objs)
			if driver.Name != csi.DriverName {
				t.Errorf("CSIDriver %q, want %q", driver.Name, csi.DriverName)
			}
			for _, sc := range objectsOf[*storagev1.StorageClass](objs) {
				if sc.Provisioner != csi.DriverName {
					t.Errorf("StorageClass %s provisioner %q, want %q", sc.Name, sc.Provisioner, csi.DriverName)
				}
			}
		})
	}
}

func TestCSIDriverObject(t *testing.T) {
	d := only[*storagev1.CSIDriver](t, render(t))
	if d.Spec.AttachRequired == nil || !*d.Spec.AttachRequired {
		t.Error("attachRequired is not true: ControllerPublishVolume fences attachments")
	}
	if d.Spec.FSGroupPolicy == nil || *d.Spec.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("fsGroupPolicy %v, want File", d.Spec.FSGroupPolicy)
	}
	if d.Spec.PodInfoOnMount == nil || *d.Spec.PodInfoOnMount {
		t.Error("podInfoOnMount should be false: the Node service reads no pod information")
	}
}

func TestEveryContainerRequestsResources(t *testing.T) {
	forEachValueSet(t, func(t *testing.T, objs []runtime.Object) {
		for component, spec := range podSpecs(t, objs) {
			for _, c := range append(spec.InitContainers, spec.Containers...) {
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
						t.Errorf("%s/%s requests no %s", component, c.Name, r)
					}
				}
			}
		}
	})
}

func TestStorageClassParametersAreTheDrivers(t *testing.T) {
	known := []string{csi.ParamReplicas, csi.ParamMinInSyncReplicas, csi.ParamFSType, csi.ParamTopologyKey}
	values := string(readRepoFile(t, chartDir+"/values.yaml"))
	for _, p := range known {
		if !strings.Contains(values, "#     "+p+":") {
			t.Errorf("values.yaml does not document StorageClass parameter %s", p)
		}
	}
	custom := objectsOf[*storagev1.StorageClass](render(t, customValues))
	if len(custom) != 2 {
		t.Fatalf("%d StorageClasses from the custom values, want 2", len(custom))
	}
	want := map[string]string{"replicas": "2", "minInSyncReplicas": "1", "fsType": "xfs", "topologyKey": "example.test/rack"}
	for k, v := range want {
		if custom[0].Parameters[k] != v {
			t.Errorf("%s: parameter %s=%q, want %q", custom[0].Name, k, custom[0].Parameters[k], v)
		}
	}
	for _, sc := range custom {
		for k := range sc.Parameters {
			if !slices.Contains(known, k) {
				t.Errorf("%s: parameter %q is not one the driver takes", sc.Name, k)
			}
		}
	}
	if custom[0].Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("%s is not the default class", custom[0].Name)
	}
	// Volumes grow unless a class says otherwise.
	for i, want := range []bool{false, true} {
		if got := custom[i].AllowVolumeExpansion; got == nil || *got != want {
			t.Errorf("%s: allowVolumeExpansion %v, want %v", custom[i].Name, got, want)
		}
	}
}

// TestDefaultImagesNameNoRegistry keeps the defaults free of a registry
// host: where images come from is the operator's choice, set in values.
func TestDefaultImagesNameNoRegistry(t *testing.T) {
	for component, spec := range podSpecs(t, render(t)) {
		for _, c := range spec.Containers {
			first, _, hasPath := strings.Cut(c.Image, "/")
			if hasPath && (strings.ContainsAny(first, ".:") || first == "localhost") {
				t.Errorf("%s/%s: default image %q names a registry host", component, c.Name, c.Image)
			}
			if !strings.Contains(c.Image, ":") {
				t.Errorf("%s/%s: image %q has no tag", component, c.Name, c.Image)
			}
		}
	}
}

// TestControllerPodIsUnprivileged: only the node plugin needs privileges;
// the controller pod's containers talk to the API server and a socket.
func TestControllerPodIsUnprivileged(t *testing.T) {
	forEachValueSet(t, func(t *testing.T, objs []runtime.Object) {
		for _, c := range podSpecs(t, objs)[chartargs.Controller].Containers {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s has no securityContext", c.Name)
			case sc.Privileged != nil && *sc.Privileged,
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem,
				sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL"):
				t.Errorf("%s: securityContext %+v, want unprivileged, no escalation, read-only root, no capabilities", c.Name, sc)
			}
		}
	})
}

func TestValuesReachTheFlags(t *testing.T) {
	c, err := chartargs.Parse(helm(t, templateArgs([]string{customValues})...))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		container chartargs.Container
		want      map[string]string
	}{
		{c.Controller, map[string]string{
			"api-port": "17700", "heartbeat-timeout": "8s", "repair-interval": "500ms", "resume-window": "30m",
			"leader-election-lease-duration": "30s", "leader-election-renew-deadline": "20s",
			"leader-election-retry-period": "5s", "v": "5",
		}},
		{c.Node, map[string]string{
			"zone": "zone-x", "data-dir": "/mnt/disks/trireme", "replication-port": "17600", "nbd-port": "20809",
			"api-port": "17601", "capacity-bytes": "107374182400", "max-volumes": "40", "ack-timeout": "5s",
			"heartbeat-interval": "2s", "degraded-write-timeout": "1m", "fence-timeout": "6s", "v": "5",
		}},
	}
	for _, tt := range tests {
		for flag, want := range tt.want {
			if got, _ := chartargs.Flag(tt.container.Args, flag); got != want {
				t.Errorf("%s --%s=%q, want %q", tt.container.Args[0], flag, got, want)
			}
		}
	}
}
