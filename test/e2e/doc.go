// Package e2e runs Trireme against a real Kubernetes control plane on
// this machine: etcd, kube-apiserver and kube-controller-manager, the CSI
// provisioner, attacher and resizer, two Trireme controllers electing a
// leader through a Lease, and node agents on their own loopback addresses
// in three zones. The kubelet cannot run here; the tests play its part by
// calling each agent's CSI Node service over its socket. The control
// plane and the sidecars come from `make tools` (internal/kubetest).
package e2e
