package kube

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"

	"github.com/trireme-csi/trireme/internal/kubetest"
	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
	"github.com/trireme-csi/trireme/pkg/store/storetest"
)

// startAPIServer starts etcd and kube-apiserver with the CRDs installed.
func startAPIServer(t *testing.T) *rest.Config {
	t.Helper()
	cp := kubetest.Start(t, kubetest.Options{})
	cfg := cp.RESTConfig()
	cfg.QPS, cfg.Burst = 1000, 1000 // the client's default 5 per second would time the server out of the races
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := InstallCRDs(ctx, cfg, crdDir); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestContract runs the store contract against a real kube-apiserver:
// the CRD schemas, the preconditions and the name claims as the server
// enforces them. Every subtest starts from empty resources.
func TestContract(t *testing.T) {
	cfg := startAPIServer(t)
	newStore := func(t *testing.T) store.Store {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		emptyAll(t, s)
		t.Cleanup(func() { s.Close() })
		return s
	}
	storetest.Run(t, newStore, storetest.WithReopen(func(t *testing.T, s store.Store) store.Store {
		s.Close()
		s2, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s2.Close() })
		return s2
	}))
}

// emptyAll deletes every object of the store's resources.
func emptyAll(t *testing.T, s *Store) {
	t.Helper()
	dyn := s.res.(dynamicResources).dyn
	for _, gvr := range []schema.GroupVersionResource{VolumeResource, NameResource, NodeResource} {
		err := dyn.Resource(gvr).DeleteCollection(t.Context(), metav1.DeleteOptions{}, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("empty %s: %v", gvr.Resource, err)
		}
	}
}

// TestPrinterColumnsShowSummary asks the server for the table kubectl get
// prints, for a degraded volume.
func TestPrinterColumnsShowSummary(t *testing.T) {
	cfg := startAPIServer(t)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := testVolume("vol-0f1e", "pvc-7")
	v.MinInSyncReplicas = 1
	v.Layout.Primary = "n1"
	v.Layout.Replicas = []replication.ReplicaInfo{
		{NodeID: "n1", Zone: "zone-a", State: replication.InSync},
		{NodeID: "n2", Zone: "zone-b", State: replication.InSync},
		{NodeID: "n3", Zone: "zone-c", State: replication.Syncing},
	}
	v.Layout.Epoch = 4
	if _, err := s.CreateVolume(t.Context(), v); err != nil {
		t.Fatal(err)
	}

	table := getTable(t, cfg, "/apis/trireme.dev/v1alpha1/triremevolumes")
	want := map[string]any{
		"Name": "vol-0f1e", "Size": "1Gi", "Replicas": float64(3), "InSync": float64(2),
		"Zones": "zone-a,zone-b,zone-c", "Primary": "n1", "Epoch": "4", "Health": "Degraded",
		"Sync": "n3=Syncing", "Volume-Name": "pvc-7",
	}
	if len(table.Rows) != 1 {
		t.Fatalf("%d rows, want 1", len(table.Rows))
	}
	for i, col := range table.ColumnDefinitions {
		if w, ok := want[col.Name]; ok && table.Rows[0].Cells[i] != w {
			t.Errorf("column %s = %v, want %v", col.Name, table.Rows[0].Cells[i], w)
		}
	}
}

type serverTable struct {
	ColumnDefinitions []struct{ Name string }
	Rows              []struct{ Cells []any }
}

func getTable(t *testing.T, cfg *rest.Config, path string) serverTable {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, cfg.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var table serverTable
	if err := json.NewDecoder(resp.Body).Decode(&table); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("table of %s: status %d, %v", path, resp.StatusCode, err)
	}
	return table
}
