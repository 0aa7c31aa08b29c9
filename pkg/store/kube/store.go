// Package kube is the Kubernetes backend of package store: every record is
// a cluster-scoped custom resource of group trireme.dev (deploy/crds),
// read and written through client-go, for a controller that runs in a
// cluster, possibly as several replicas of which one leads.
//
// A volume is two objects. Its TriremeVolume, named for its id, holds the
// record in spec and, in status, a summary that kubectl's printer columns
// show (size, replicas, InSync count, zones, primary, epoch, health, sync).
// Its TriremeVolumeName, named for its CSI name, claims the name for the
// id: the API server refuses to create an object whose name is taken,
// which is what makes the name claim atomic. CSI names are up to 128 bytes
// of any UTF-8, so the object names come from objectName.
//
// CreateVolume claims the name first, then creates the TriremeVolume,
// then reads the claim again: the volume exists once both objects do and
// the claim still names it. A TriremeVolume counts only while the claim
// of its name names its id, so every read of a volume reads both objects.
// A claim whose volume is missing is left from an interrupted create or
// delete (DeleteVolume deletes the TriremeVolume first, then the claim),
// and the next CreateVolume of the name takes it over with a
// compare-and-swap; a create that finds its claim taken over when it
// reads it again deletes its TriremeVolume and reports ErrExists. So a
// crash at any point leaves at most a claim that names a missing volume
// (reads ignore it, the next create takes it), or, if a create is stopped
// between its two last steps after a takeover, a TriremeVolume that can
// never count again. CollectGarbage deletes both kinds.
//
// Compare-and-swap: the store's Revision (1 on create, one more per
// write) is kept in spec.revision. A write reads the object, compares the
// revisions, and writes with the object's resourceVersion as the API
// server's precondition, so a write that raced another one gets a
// conflict from the server; the store then reads again, and reports
// ErrConflict only if the store revision moved.
//
// Known shortcoming: ListVolumes lists every TriremeVolume and every
// claim for each page, since the API server cannot start a list at an
// arbitrary key, nor in the byte order of ids. It costs O(volumes) per
// page; fine for thousands of volumes, not for millions.
package kube

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/trireme-csi/trireme/pkg/store"
)

var (
	// ErrCorrupt means an object holds something this build cannot read.
	ErrCorrupt = errors.New("custom resource is corrupt or from a newer version")
	// ErrClosed means the store was used after Close.
	ErrClosed = errors.New("store is closed")
	// ErrNoCRDs means the API server does not serve the custom resources:
	// deploy/crds is not applied.
	ErrNoCRDs = errors.New("trireme.dev custom resources are not installed (kubectl apply -f deploy/crds/)")
)

// listPageSize is how many objects one list request asks for.
const listPageSize = 500

// Store is a store.Store kept in custom resources.
type Store struct {
	res    resources
	closed atomic.Bool
}

var _ store.Store = (*Store)(nil)

// New returns a Store that reaches the API server with cfg.
func New(cfg *rest.Config) (*Store, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube store: %w", err)
	}
	return NewForClient(dyn), nil
}

// NewForClient returns a Store over a dynamic client.
func NewForClient(dyn dynamic.Interface) *Store {
	return &Store{res: dynamicResources{dyn}}
}

// Check asks the API server for each custom resource, and fails with
// ErrNoCRDs if one is not served.
func (s *Store) Check(ctx context.Context) error {
	for _, gvr := range []schema.GroupVersionResource{VolumeResource, NameResource, NodeResource} {
		_, err := s.res.list(ctx, gvr, 1)
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("kube store: %w: %s not found", ErrNoCRDs, gvr.Resource)
		}
		if err != nil {
			return fmt.Errorf("kube store: list %s: %w", gvr.Resource, err)
		}
	}
	return nil
}

// Close makes every later call fail. It holds no resources.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// begin refuses calls on a closed store or with a done context.
func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// storeErr turns the API server's answers into the store's errors.
func storeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: %v", store.ErrNotFound, err)
	case apierrors.IsAlreadyExists(err):
		return fmt.Errorf("%w: %v", store.ErrExists, err)
	case apierrors.IsConflict(err):
		return fmt.Errorf("%w: %v", store.ErrConflict, err)
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%w: refused by the API server: %v", store.ErrInvalid, err)
	}
	return err
}

// checkRevision compares the revision a write was based on with the
// stored one.
func checkRevision(stored, want uint64) error {
	if stored != want {
		return fmt.Errorf("%w: stored revision %d, write based on %d", store.ErrConflict, stored, want)
	}
	return nil
}

// resources is the part of the API the store uses: cluster-scoped
// objects, with resourceVersion preconditions on update and delete.
type resources interface {
	create(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*unstructured.Unstructured, error)
	get(ctx context.Context, gvr schema.GroupVersionResource, name string) (*unstructured.Unstructured, error)
	// list returns at most limit objects, or all of them if limit is 0.
	list(ctx context.Context, gvr schema.GroupVersionResource, limit int64) ([]unstructured.Unstructured, error)
	// update replaces the object if its resourceVersion is u's.
	update(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*unstructured.Unstructured, error)
	// delete removes the object if its resourceVersion is rv.
	delete(ctx context.Context, gvr schema.GroupVersionResource, name, rv string) error
}

// dynamicResources is resources over client-go's dynamic client.
type dynamicResources struct{ dyn dynamic.Interface }

func (d dynamicResources) create(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return d.dyn.Resource(gvr).Create(ctx, u, metav1.CreateOptions{})
}

func (d dynamicResources) get(ctx context.Context, gvr schema.GroupVersionResource, name string) (*unstructured.Unstructured, error) {
	return d.dyn.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
}

func (d dynamicResources) list(ctx context.Context, gvr schema.GroupVersionResource, limit int64) ([]unstructured.Unstructured, error) {
	var out []unstructured.Unstructured
	opts := metav1.ListOptions{Limit: listPageSize}
	if limit > 0 {
		opts.Limit = limit
	}
	for {
		l, err := d.dyn.Resource(gvr).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, l.Items...)
		if limit > 0 || l.GetContinue() == "" {
			return out, nil
		}
		opts.Continue = l.GetContinue()
	}
}

func (d dynamicResources) update(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	return d.dyn.Resource(gvr).Update(ctx, u, metav1.UpdateOptions{})
}

func (d dynamicResources) delete(ctx context.Context, gvr schema.GroupVersionResource, name, rv string) error {
	return d.dyn.Resource(gvr).Delete(ctx, name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{ResourceVersion: &rv},
	})
}
