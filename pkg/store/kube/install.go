package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// crdResource is where the API server keeps CustomResourceDefinitions.
var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRDs creates the CustomResourceDefinitions of every YAML file in
// dir (deploy/crds), replacing ones that exist, and waits until the API
// server serves the store's resources. Tests and tools use it; a cluster
// gets them from its manifests.
func InstallCRDs(ctx context.Context, cfg *rest.Config, dir string) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("install CRDs: no YAML files in %s", dir)
	}
	for _, f := range files {
		if err := applyCRD(ctx, dyn, f); err != nil {
			return fmt.Errorf("install CRDs: %s: %w", f, err)
		}
	}
	return waitServed(ctx, NewForClient(dyn))
}

func applyCRD(ctx context.Context, dyn dynamic.Interface, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(b, &u.Object); err != nil {
		return err
	}
	crds := dyn.Resource(crdResource)
	_, err = crds.Create(ctx, u, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := crds.Get(ctx, u.GetName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	u.SetResourceVersion(cur.GetResourceVersion())
	_, err = crds.Update(ctx, u, metav1.UpdateOptions{})
	return err
}

// waitServed polls until every resource of the store can be listed.
func waitServed(ctx context.Context, s *Store) error {
	for {
		err := s.Check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("install CRDs: not served: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
