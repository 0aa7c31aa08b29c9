package kube

import (
	"testing"

	"github.com/trireme-csi/trireme/pkg/store"
	"github.com/trireme-csi/trireme/pkg/store/storetest"
)

func TestContractInMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return &Store{res: newMemory()}
	}, storetest.WithReopen(func(t *testing.T, s store.Store) store.Store {
		s.Close()
		return &Store{res: s.(*Store).res}
	}))
}
