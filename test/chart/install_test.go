package chart

import (
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/trireme-csi/trireme/internal/chartargs"
	"github.com/trireme-csi/trireme/internal/kubetest"
)

// cluster is a kube-apiserver with clients for the tests' checks.
type cluster struct {
	kubeconfig string
	url        string
	caFile     string
	dyn        *dynamic.DynamicClient
	client     *kubernetes.Clientset
	mapper     meta.RESTMapper
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	kubetest.Tool(t, kubetest.Helm)
	// Node plugins run privileged, which a cluster must allow.
	cp := kubetest.Start(t, kubetest.Options{APIServerArgs: []string{"--allow-privileged=true"}})
	cfg := cp.RESTConfig()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	return &cluster{kubeconfig: cp.Kubeconfig(), url: cp.URL, caFile: cp.CAFile, dyn: dyn, client: client, mapper: mapper}
}

// object is what identifies one API object.
type object struct {
	gvk             schema.GroupVersionKind
	namespace, name string
}

func identify(t *testing.T, objs []runtime.Object) []object {
	t.Helper()
	var out []object
	for _, o := range objs {
		m, err := meta.Accessor(o)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, object{o.GetObjectKind().GroupVersionKind(), m.GetNamespace(), m.GetName()})
	}
	return out
}

// get fetches o; a missing object is (nil, nil).
func (c *cluster) get(t *testing.T, o object) map[string]any {
	t.Helper()
	m, err := c.mapper.RESTMapping(o.gvk.GroupKind(), o.gvk.Version)
	if err != nil {
		t.Fatalf("%v: %v", o.gvk, err)
	}
	var r dynamic.ResourceInterface = c.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		r = c.dyn.Resource(m.Resource).Namespace(o.namespace)
	}
	u, err := r.Get(context.Background(), o.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", o.gvk.Kind, o.namespace, o.name, err)
	}
	return u.Object
}

// crdObjects returns the CRDs in deploy/crds.
func crdObjects(t *testing.T) []object {
	t.Helper()
	gvk := schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	var out []object
	for _, f := range yamlFiles(t, filepath.Join(repoRoot(t), "deploy/crds")) {
		var crd metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(f.content, &crd); err != nil {
			t.Fatal(err)
		}
		out = append(out, object{gvk: gvk, name: crd.Name})
	}
	return out
}

func TestHelmInstallUpgradeUninstall(t *testing.T) {
	skipUnderRace(t)
	c := startCluster(t)
	kc := "--kubeconfig=" + c.kubeconfig
	const timeout = "--timeout=2m"
	rendered := identify(t, render(t))
	crds := crdObjects(t)

	notes := string(helm(t, "install", "trireme", chartDir, "--namespace", namespace, "--create-namespace", kc, timeout))
	for _, want := range []string{"storageClassName: trireme", "kubectl get triremevolumes", "kubectl -n trireme-system get lease trireme-controller"} {
		if !strings.Contains(notes, want) {
			t.Errorf("install notes lack %q:\n%s", want, notes)
		}
	}
	for _, o := range append(rendered, crds...) {
		if c.get(t, o) == nil {
			t.Errorf("after install, %s %s/%s does not exist", o.gvk.Kind, o.namespace, o.name)
		}
	}
	c.checkAccess(t)
	caSecret := object{schema.GroupVersionKind{Version: "v1", Kind: "Secret"}, namespace, "trireme-ca"}
	ca := c.get(t, caSecret)["data"]
	if ca == nil {
		t.Fatal("after install, the CA Secret holds no data")
	}

	helm(t, "upgrade", "trireme", chartDir, "--namespace", namespace, kc, timeout,
		"--set", "controller.replicas=3", "--set", "node.heartbeatInterval=500ms")
	deploy := c.get(t, object{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, namespace, "trireme-controller"})
	if replicas := deploy["spec"].(map[string]any)["replicas"]; replicas != int64(3) {
		t.Errorf("after upgrade, controller replicas = %v, want 3", replicas)
	}
	// A new CA would leave every running pod's certificate untrusted.
	if got := c.get(t, caSecret)["data"]; !reflect.DeepEqual(got, ca) {
		t.Error("the upgrade replaced the cluster CA")
	}
	node := c.get(t, object{schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "DaemonSet"}, namespace, "trireme-node"})
	if args := triremeArgs(node); !slices.Contains(args, "--heartbeat-interval=500ms") {
		t.Errorf("after upgrade, node args %q lack --heartbeat-interval=500ms", args)
	}

	helm(t, "uninstall", "trireme", "--namespace", namespace, "--wait", kc, timeout)
	for _, o := range rendered {
		if c.get(t, o) != nil {
			t.Errorf("after uninstall, %s %s/%s still exists", o.gvk.Kind, o.namespace, o.name)
		}
	}
	// Helm never deletes the CRDs of a chart's crds/ directory: deleting
	// them would delete every volume record with them.
	for _, o := range crds {
		if c.get(t, o) == nil {
			t.Errorf("after uninstall, CRD %s is gone; it must stay", o.name)
		}
	}
}

// otherNamespace stands for the namespace of an application's claim.
const otherNamespace = "app"

// checkAccess asks the API server's own authorizer, through
// SubjectAccessReviews, whether the installed RBAC allows each request in
// codeAccess and refuses each in forbidden.
func (c *cluster) checkAccess(t *testing.T) {
	t.Helper()
	for sa, requests := range codeAccess {
		for _, a := range requests {
			if !c.reviewAccess(t, sa, a) {
				t.Errorf("API server: %s may not %s %s %q (name %q, namespaced %v)", sa, a.verb, a.resource, a.group, a.name, a.namespaced)
			}
		}
	}
	for sa, requests := range forbidden {
		for _, a := range requests {
			if c.reviewAccess(t, sa, a) {
				t.Errorf("API server: %s may %s %s %q (name %q, namespaced %v)", sa, a.verb, a.resource, a.group, a.name, a.namespaced)
			}
		}
	}
}

func (c *cluster) reviewAccess(t *testing.T, sa string, a access) bool {
	t.Helper()
	resource, sub, _ := strings.Cut(a.resource, "/")
	attrs := &authorizationv1.ResourceAttributes{Verb: a.verb, Group: a.group, Resource: resource,
		Subresource: sub, Name: a.name}
	if c.namespacedResource(t, a.group, resource) {
		// A request the code makes in any namespace is asked for in one
		// that is not the release's.
		attrs.Namespace = otherNamespace
		if a.namespaced {
			attrs.Namespace = namespace
		}
	}
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + namespace + ":" + sa,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
		ResourceAttributes: attrs,
	}}
	got, err := c.client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), review, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return got.Status.Allowed
}

func (c *cluster) namespacedResource(t *testing.T, group, resource string) bool {
	t.Helper()
	gvr, err := c.mapper.ResourceFor(schema.GroupVersionResource{Group: group, Resource: resource})
	if err != nil {
		t.Fatalf("%s.%s: %v", resource, group, err)
	}
	gvk, err := c.mapper.KindFor(gvr)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		t.Fatal(err)
	}
	return m.Scope.Name() == meta.RESTScopeNameNamespace
}

// triremeArgs returns the trireme container's args of an unstructured
// workload.
func triremeArgs(workload map[string]any) []string {
	spec := workload["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	for _, c := range spec["containers"].([]any) {
		c := c.(map[string]any)
		if c["name"] != chartargs.ContainerName {
			continue
		}
		var args []string
		for _, a := range c["args"].([]any) {
			args = append(args, a.(string))
		}
		return args
	}
	return nil
}
