package chart

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// access is one API request a component's code makes.
type access struct {
	group, resource, verb string
	// name is the one object asked for, when the code names it; empty
	// means any object (list, watch, create, or names not known ahead).
	name string
	// namespaced requests go to the release's namespace; the others are
	// cluster-wide.
	namespaced bool
}

// controllerLease is the controller's leader-election Lease, named by
// --leader-election-id in the chart (release "trireme").
const controllerLease = "trireme-controller"

// codeAccess lists, per ServiceAccount of the default render, every request
// the code running under it makes; each comment says where it is made. The
// sidecars' requests are those of their releases' informers, listers and
// leader election.
var codeAccess = map[string][]access{
	"trireme-controller": {
		// pkg/store/kube: records through the dynamic client. volumes.go
		// creates, gets, lists, updates and deletes volumes, creates, gets,
		// lists, updates and deletes name claims; nodes.go creates,
		// updates, gets, lists and deletes nodes; store.go lists each kind
		// once at start to check the CRDs are there.
		{group: "trireme.dev", resource: "triremevolumes", verb: "create"},
		{group: "trireme.dev", resource: "triremevolumes", verb: "get"},
		{group: "trireme.dev", resource: "triremevolumes", verb: "list"},
		{group: "trireme.dev", resource: "triremevolumes", verb: "update"},
		{group: "trireme.dev", resource: "triremevolumes", verb: "delete"},
		{group: "trireme.dev", resource: "triremevolumenames", verb: "create"},
		{group: "trireme.dev", resource: "triremevolumenames", verb: "get"},
		{group: "trireme.dev", resource: "triremevolumenames", verb: "list"},
		{group: "trireme.dev", resource: "triremevolumenames", verb: "update"},
		{group: "trireme.dev", resource: "triremevolumenames", verb: "delete"},
		{group: "trireme.dev", resource: "triremenodes", verb: "create"},
		{group: "trireme.dev", resource: "triremenodes", verb: "get"},
		{group: "trireme.dev", resource: "triremenodes", verb: "list"},
		{group: "trireme.dev", resource: "triremenodes", verb: "update"},
		{group: "trireme.dev", resource: "triremenodes", verb: "delete"},
		// pkg/kube/leader.go: client-go's LeaseLock gets, creates and
		// renews the Lease, and releases it with an update.
		{group: "coordination.k8s.io", resource: "leases", verb: "get", name: controllerLease, namespaced: true},
		{group: "coordination.k8s.io", resource: "leases", verb: "create", namespaced: true},
		{group: "coordination.k8s.io", resource: "leases", verb: "update", name: controllerLease, namespaced: true},
		// pkg/kube/events.go: the TriremeVolume (above) and the claim,
		// through the PV or the PVC named in the parameters; events are
		// created, and patched when repeated, in the claim's namespace.
		{group: "", resource: "persistentvolumes", verb: "get"},
		{group: "", resource: "persistentvolumeclaims", verb: "get"},
		{group: "", resource: "events", verb: "create"},
		{group: "", resource: "events", verb: "patch"},

		// csi-provisioner: PV lifecycle, claims, classes, topology.
		{group: "", resource: "persistentvolumes", verb: "list"},
		{group: "", resource: "persistentvolumes", verb: "watch"},
		{group: "", resource: "persistentvolumes", verb: "create"},
		{group: "", resource: "persistentvolumes", verb: "patch"},
		{group: "", resource: "persistentvolumes", verb: "delete"},
		{group: "", resource: "persistentvolumeclaims", verb: "get"},
		{group: "", resource: "persistentvolumeclaims", verb: "list"},
		{group: "", resource: "persistentvolumeclaims", verb: "watch"},
		{group: "", resource: "persistentvolumeclaims", verb: "update"},
		{group: "storage.k8s.io", resource: "storageclasses", verb: "list"},
		{group: "storage.k8s.io", resource: "storageclasses", verb: "watch"},
		{group: "storage.k8s.io", resource: "csinodes", verb: "list"},
		{group: "storage.k8s.io", resource: "csinodes", verb: "watch"},
		{group: "", resource: "nodes", verb: "get"},
		{group: "", resource: "nodes", verb: "list"},
		{group: "", resource: "nodes", verb: "watch"},
		{group: "storage.k8s.io", resource: "volumeattachments", verb: "list"},
		{group: "storage.k8s.io", resource: "volumeattachments", verb: "watch"},
		{group: "", resource: "events", verb: "update"},
		// csi-attacher: VolumeAttachments and their status.
		{group: "storage.k8s.io", resource: "volumeattachments", verb: "patch"},
		{group: "storage.k8s.io", resource: "volumeattachments/status", verb: "patch"},
		// csi-resizer: claims' status, and pods using a claim.
		{group: "", resource: "persistentvolumeclaims/status", verb: "patch"},
		{group: "", resource: "pods", verb: "list"},
		{group: "", resource: "pods", verb: "watch"},
		// Every sidecar's leader election, under its own Lease name.
		{group: "coordination.k8s.io", resource: "leases", verb: "get", name: "external-attacher-leader-csi-trireme-dev", namespaced: true},
		{group: "coordination.k8s.io", resource: "leases", verb: "update", name: "external-attacher-leader-csi-trireme-dev", namespaced: true},
	},
	"trireme-node": {
		// pkg/kube/node.go: the agent reads its Node's
		// topology.kubernetes.io/zone label when --zone is not given.
		{group: "", resource: "nodes", verb: "get", name: "node-1"},
		// pkg/kube/relay.go follows the controller's Lease with an
		// informer limited to it by a metadata.name field selector.
		{group: "coordination.k8s.io", resource: "leases", verb: "list", name: controllerLease, namespaced: true},
		{group: "coordination.k8s.io", resource: "leases", verb: "watch", name: controllerLease, namespaced: true},
	},
}

// forbidden lists requests a component must not be able to make: least
// privilege, checked the same way.
var forbidden = map[string][]access{
	"trireme-node": {
		{group: "coordination.k8s.io", resource: "leases", verb: "update", name: controllerLease, namespaced: true},
		{group: "", resource: "nodes", verb: "list"},
		{group: "trireme.dev", resource: "triremevolumes", verb: "get"},
		{group: "", resource: "secrets", verb: "get"},
	},
	"trireme-controller": {
		{group: "", resource: "secrets", verb: "get"},
		{group: "trireme.dev", resource: "triremevolumes", verb: "watch"},
		{group: "", resource: "nodes", verb: "update"},
		{group: "coordination.k8s.io", resource: "leases", verb: "get", name: controllerLease, namespaced: false},
	},
}

func TestRBACCoversEveryRequestTheCodeMakes(t *testing.T) {
	objs := render(t)
	for sa, requests := range codeAccess {
		for _, a := range requests {
			if !allowed(objs, sa, a) {
				t.Errorf("%s may not %s %s %q (name %q, namespaced %v)", sa, a.verb, a.resource, a.group, a.name, a.namespaced)
			}
		}
	}
	for sa, requests := range forbidden {
		for _, a := range requests {
			if allowed(objs, sa, a) {
				t.Errorf("%s may %s %s %q (name %q, namespaced %v): more than it needs", sa, a.verb, a.resource, a.group, a.name, a.namespaced)
			}
		}
	}
}

func TestWorkloadsRunUnderTheirServiceAccounts(t *testing.T) {
	for name, files := range valueSets {
		t.Run(name, func(t *testing.T) {
			objs := render(t, files...)
			accounts := map[string]bool{}
			for _, sa := range objectsOf[*corev1.ServiceAccount](objs) {
				accounts[sa.Name] = true
			}
			for component, spec := range podSpecs(t, objs) {
				if !accounts[spec.ServiceAccountName] {
					t.Errorf("%s runs as %q, which the chart does not create", component, spec.ServiceAccountName)
				}
			}
		})
	}
}

// allowed reports whether the rendered RBAC lets the ServiceAccount sa in
// the release's namespace make request a.
func allowed(objs []runtime.Object, sa string, a access) bool {
	for _, b := range objectsOf[*rbacv1.ClusterRoleBinding](objs) {
		if bindsAccount(b.Subjects, sa) && b.RoleRef.Kind == "ClusterRole" && rulesAllow(clusterRoleRules(objs, b.RoleRef.Name), a) {
			return true
		}
	}
	if !a.namespaced {
		return false
	}
	for _, b := range objectsOf[*rbacv1.RoleBinding](objs) {
		if b.Namespace != namespace || !bindsAccount(b.Subjects, sa) {
			continue
		}
		rules := clusterRoleRules(objs, b.RoleRef.Name)
		if b.RoleRef.Kind == "Role" {
			rules = roleRules(objs, b.RoleRef.Name)
		}
		if rulesAllow(rules, a) {
			return true
		}
	}
	return false
}

func bindsAccount(subjects []rbacv1.Subject, sa string) bool {
	return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
		return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == namespace
	})
}

func clusterRoleRules(objs []runtime.Object, name string) []rbacv1.PolicyRule {
	for _, r := range objectsOf[*rbacv1.ClusterRole](objs) {
		if r.Name == name {
			return r.Rules
		}
	}
	return nil
}

func roleRules(objs []runtime.Object, name string) []rbacv1.PolicyRule {
	for _, r := range objectsOf[*rbacv1.Role](objs) {
		if r.Name == name && r.Namespace == namespace {
			return r.Rules
		}
	}
	return nil
}

func rulesAllow(rules []rbacv1.PolicyRule, a access) bool {
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return matches(r.APIGroups, a.group) && matches(r.Resources, a.resource) && matches(r.Verbs, a.verb) &&
			(len(r.ResourceNames) == 0 || (a.name != "" && slices.Contains(r.ResourceNames, a.name)))
	})
}

func matches(list []string, v string) bool {
	return slices.Contains(list, v) || slices.Contains(list, "*")
}
