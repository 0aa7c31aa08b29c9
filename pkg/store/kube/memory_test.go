package kube

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// memory is resources kept in a map, with the API server's
// resourceVersion preconditions, for tests that run without one. The
// contract suite also runs against a real API server (see kube_test.go).
type memory struct {
	mu      sync.Mutex
	rv      int64
	objects map[schema.GroupVersionResource]map[string]*unstructured.Unstructured
	// fail, when set, may fail an operation before it takes effect
	// (before) or after (after), to model crashes and lost answers.
	fail func(op string, gvr schema.GroupVersionResource, name string) (before, after error)
}

func newMemory() *memory {
	return &memory{objects: map[schema.GroupVersionResource]map[string]*unstructured.Unstructured{}}
}

func (m *memory) injected(op string, gvr schema.GroupVersionResource, name string) (error, error) {
	if m.fail == nil {
		return nil, nil
	}
	return m.fail(op, gvr, name)
}

func (m *memory) bucket(gvr schema.GroupVersionResource) map[string]*unstructured.Unstructured {
	if m.objects[gvr] == nil {
		m.objects[gvr] = map[string]*unstructured.Unstructured{}
	}
	return m.objects[gvr]
}

func (m *memory) store(gvr schema.GroupVersionResource, u *unstructured.Unstructured) *unstructured.Unstructured {
	m.rv++
	c := u.DeepCopy()
	c.SetResourceVersion(strconv.FormatInt(m.rv, 10))
	m.bucket(gvr)[c.GetName()] = c
	return c.DeepCopy()
}

func (m *memory) create(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	before, after := m.injected("create", gvr, u.GetName())
	if before != nil {
		return nil, before
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.bucket(gvr)[u.GetName()]; ok {
		return nil, apierrors.NewAlreadyExists(gvr.GroupResource(), u.GetName())
	}
	if u.GetResourceVersion() != "" {
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	c := u.DeepCopy()
	c.SetCreationTimestamp(metav1.Now())
	out := m.store(gvr, c)
	if after != nil {
		return nil, after
	}
	return out, nil
}

func (m *memory) get(ctx context.Context, gvr schema.GroupVersionResource, name string) (*unstructured.Unstructured, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.bucket(gvr)[name]
	if !ok {
		return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	return u.DeepCopy(), nil
}

func (m *memory) list(ctx context.Context, gvr schema.GroupVersionResource, limit int64) ([]unstructured.Unstructured, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []unstructured.Unstructured
	b := m.bucket(gvr)
	for _, name := range slices.Sorted(maps.Keys(b)) {
		if limit > 0 && int64(len(out)) == limit {
			break
		}
		out = append(out, *b[name].DeepCopy())
	}
	return out, nil
}

func (m *memory) update(ctx context.Context, gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	before, after := m.injected("update", gvr, u.GetName())
	if before != nil {
		return nil, before
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.bucket(gvr)[u.GetName()]
	if !ok {
		return nil, apierrors.NewNotFound(gvr.GroupResource(), u.GetName())
	}
	if cur.GetResourceVersion() != u.GetResourceVersion() {
		return nil, apierrors.NewConflict(gvr.GroupResource(), u.GetName(), nil)
	}
	out := m.store(gvr, u)
	if after != nil {
		return nil, after
	}
	return out, nil
}

func (m *memory) delete(ctx context.Context, gvr schema.GroupVersionResource, name, rv string) error {
	before, after := m.injected("delete", gvr, name)
	if before != nil {
		return before
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.bucket(gvr)[name]
	if !ok {
		return apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	if cur.GetResourceVersion() != rv {
		return apierrors.NewConflict(gvr.GroupResource(), name, nil)
	}
	delete(m.bucket(gvr), name)
	return after
}
