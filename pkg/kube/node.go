package kube

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ZoneLabel is the well-known label of a Node's availability zone.
const ZoneLabel = "topology.kubernetes.io/zone"

// NodeZone returns the zone label of the Node object named name; "" if it
// has none.
func NodeZone(ctx context.Context, client kubernetes.Interface, name string) (string, error) {
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("zone of node %s: %w", name, err)
	}
	return n.Labels[ZoneLabel], nil
}
