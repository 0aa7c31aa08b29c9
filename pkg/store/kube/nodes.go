package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/trireme-csi/trireme/pkg/store"
)

// cleanupTimeout bounds the deletes that undo half-done work.
const cleanupTimeout = 10 * time.Second

// PutNode implements store.Store.
func (s *Store) PutNode(ctx context.Context, n store.Node) (store.Node, error) {
	out, err := s.putNode(ctx, n)
	if err != nil {
		return store.Node{}, fmt.Errorf("put node %s at revision %d: %w", n.ID, n.Revision, err)
	}
	return out, nil
}

func (s *Store) putNode(ctx context.Context, n store.Node) (store.Node, error) {
	if err := s.begin(ctx); err != nil {
		return store.Node{}, err
	}
	if err := n.Validate(); err != nil {
		return store.Node{}, err
	}
	if n.Revision == 0 {
		out, err := s.writeNode(ctx, n, "")
		return out, storeErr(err)
	}
	for {
		stored, rv, err := s.getNode(ctx, n.ID)
		if err != nil {
			return store.Node{}, err
		}
		if err := checkRevision(stored.Revision, n.Revision); err != nil {
			return store.Node{}, err
		}
		out, err := s.writeNode(ctx, n, rv)
		if !apierrors.IsConflict(err) {
			return out, storeErr(err)
		}
	}
}

// writeNode creates the node (rv empty) or replaces the object at rv,
// with the revision one higher. API errors come back as they are, for
// the caller to tell a conflict.
func (s *Store) writeNode(ctx context.Context, n store.Node, rv string) (store.Node, error) {
	n.Revision++
	obj := encodeNode(n)
	u, err := toUnstructured(NodeKind, objectName(n.ID), rv, &obj)
	if err != nil {
		return store.Node{}, err
	}
	var out *unstructured.Unstructured
	if rv == "" {
		out, err = s.res.create(ctx, NodeResource, u)
	} else {
		out, err = s.res.update(ctx, NodeResource, u)
	}
	if err != nil {
		return store.Node{}, err
	}
	return decodeNodeObject(out, n.ID)
}

// GetNode implements store.Store.
func (s *Store) GetNode(ctx context.Context, id string) (store.Node, error) {
	n, _, err := s.getNode(ctx, id)
	if err != nil {
		return store.Node{}, fmt.Errorf("get node %s: %w", id, err)
	}
	return n, nil
}

func (s *Store) getNode(ctx context.Context, id string) (store.Node, string, error) {
	if err := s.begin(ctx); err != nil {
		return store.Node{}, "", err
	}
	u, err := s.res.get(ctx, NodeResource, objectName(id))
	if err != nil {
		return store.Node{}, "", storeErr(err)
	}
	n, err := decodeNodeObject(u, id)
	return n, u.GetResourceVersion(), err
}

func decodeNodeObject(u *unstructured.Unstructured, id string) (store.Node, error) {
	var o nodeObject
	if err := fromUnstructured(u, &o); err != nil {
		return store.Node{}, err
	}
	n, err := decodeNode(o)
	if err != nil {
		return store.Node{}, fmt.Errorf("object %s: %w", u.GetName(), err)
	}
	if id != "" && n.ID != id {
		return store.Node{}, fmt.Errorf("%w: object %s holds node %q, want %q", ErrCorrupt, u.GetName(), n.ID, id)
	}
	return n, nil
}

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	objs, err := s.res.list(ctx, NodeResource, 0)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", storeErr(err))
	}
	var nodes []store.Node
	for i := range objs {
		n, err := decodeNodeObject(&objs[i], "")
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(a, b store.Node) int { return strings.Compare(a.ID, b.ID) })
	return nodes, nil
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, id string, revision uint64) error {
	if err := s.deleteNode(ctx, id, revision); err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}

func (s *Store) deleteNode(ctx context.Context, id string, revision uint64) error {
	for {
		stored, rv, err := s.getNode(ctx, id)
		if err != nil {
			return err
		}
		if err := checkRevision(stored.Revision, revision); err != nil {
			return err
		}
		err = s.res.delete(ctx, NodeResource, objectName(id), rv)
		if !apierrors.IsConflict(err) {
			return storeErr(err)
		}
	}
}
