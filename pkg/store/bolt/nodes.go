package bolt

import (
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/trireme-csi/trireme/pkg/store"
)

// PutNode implements store.Store.
func (s *Store) PutNode(ctx context.Context, n store.Node) (store.Node, error) {
	if err := n.Validate(); err != nil {
		return store.Node{}, fmt.Errorf("put node %s: %w", n.ID, err)
	}
	var out []byte
	err := s.update(ctx, func(tx *bbolt.Tx) (err error) {
		out, err = putNode(tx, n)
		return err
	})
	if err != nil {
		return store.Node{}, fmt.Errorf("put node %s at revision %d: %w", n.ID, n.Revision, err)
	}
	return decodeNode(out)
}

// putNode creates or replaces the node as PutNode says, and returns what
// it wrote.
func putNode(tx *bbolt.Tx, n store.Node) ([]byte, error) {
	nodes := tx.Bucket(bucketNodes)
	cur := nodes.Get([]byte(n.ID))
	switch {
	case cur != nil && n.Revision == 0:
		return nil, store.ErrExists
	case cur == nil && n.Revision != 0:
		return nil, store.ErrNotFound
	case cur != nil:
		stored, err := decodeNode(cur)
		if err != nil {
			return nil, err
		}
		if err := checkRevision(stored.Revision, n.Revision); err != nil {
			return nil, err
		}
	}
	n.Revision++
	b, err := encodeNode(n)
	if err != nil {
		return nil, err
	}
	return b, nodes.Put([]byte(n.ID), b)
}

// GetNode implements store.Store.
func (s *Store) GetNode(ctx context.Context, id string) (store.Node, error) {
	var n store.Node
	err := s.view(ctx, func(tx *bbolt.Tx) (err error) {
		n, err = getNode(tx, id)
		return err
	})
	if err != nil {
		return store.Node{}, fmt.Errorf("get node %s: %w", id, err)
	}
	return n, nil
}

func getNode(tx *bbolt.Tx, id string) (store.Node, error) {
	b := tx.Bucket(bucketNodes).Get([]byte(id))
	if b == nil {
		return store.Node{}, store.ErrNotFound
	}
	return decodeNode(b)
}

// ListNodes implements store.Store.
func (s *Store) ListNodes(ctx context.Context) ([]store.Node, error) {
	var nodes []store.Node
	err := s.view(ctx, func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketNodes).ForEach(func(k, b []byte) error {
			n, err := decodeNode(b)
			if err != nil {
				return fmt.Errorf("node %s: %w", k, err)
			}
			nodes = append(nodes, n)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return nodes, nil
}

// DeleteNode implements store.Store.
func (s *Store) DeleteNode(ctx context.Context, id string, revision uint64) error {
	err := s.update(ctx, func(tx *bbolt.Tx) error {
		stored, err := getNode(tx, id)
		if err != nil {
			return err
		}
		if err := checkRevision(stored.Revision, revision); err != nil {
			return err
		}
		return tx.Bucket(bucketNodes).Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete node %s: %w", id, err)
	}
	return nil
}
