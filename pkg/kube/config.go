// Package kube connects Trireme's processes to a Kubernetes cluster: the
// client configuration, the controller's leader election on a Lease, the
// relay through which node agents follow the leader, a node's zone from
// its Node object, and the events the controller records on volumes and
// their PersistentVolumeClaims. The volume store itself is package
// store/kube.
package kube

import (
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Client rate limits. client-go's defaults (5 requests a second, bursts
// of 10) would throttle the controller's store at its first busy minute.
const (
	clientQPS   = 50
	clientBurst = 100
)

// InCluster says whether the process runs in a pod, where the in-cluster
// configuration works.
func InCluster() bool {
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && os.Getenv("KUBERNETES_SERVICE_PORT") != ""
}

// Config loads the client configuration from the kubeconfig file at path,
// or the pod's service account when path is empty.
func Config(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	cfg.UserAgent = "trireme"
	return cfg, nil
}
