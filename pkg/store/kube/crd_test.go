package kube

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"k8s.io/kube-openapi/pkg/validation/strfmt"
	"k8s.io/kube-openapi/pkg/validation/validate"
	"sigs.k8s.io/yaml"

	"github.com/trireme-csi/trireme/pkg/replication"
	"github.com/trireme-csi/trireme/pkg/store"
)

// crdDir holds the CustomResourceDefinitions, from this package.
var crdDir = filepath.Join("..", "..", "..", "deploy", "crds")

// crd is the part of a CustomResourceDefinition these tests read.
type crd struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Group string `json:"group"`
		Scope string `json:"scope"`
		Names struct {
			Kind   string `json:"kind"`
			Plural string `json:"plural"`
		} `json:"names"`
		Versions []struct {
			Name    string `json:"name"`
			Served  bool   `json:"served"`
			Storage bool   `json:"storage"`
			Schema  struct {
				OpenAPIV3Schema json.RawMessage `json:"openAPIV3Schema"`
			} `json:"schema"`
			Columns []struct {
				Name     string `json:"name"`
				JSONPath string `json:"jsonPath"`
			} `json:"additionalPrinterColumns"`
		} `json:"versions"`
	} `json:"spec"`
}

// loadCRDs reads every CRD of deploy/crds, by resource.
func loadCRDs(t *testing.T) map[schema.GroupVersionResource]crd {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s (%v)", crdDir, err)
	}
	out := map[schema.GroupVersionResource]crd{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c crd
		if err := yaml.Unmarshal(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, v := range c.Spec.Versions {
			out[schema.GroupVersionResource{Group: c.Spec.Group, Version: v.Name, Resource: c.Spec.Names.Plural}] = c
		}
	}
	return out
}

func TestCRDsDefineTheStoresResources(t *testing.T) {
	crds := loadCRDs(t)
	for gvr, kind := range map[schema.GroupVersionResource]string{
		VolumeResource: VolumeKind, NameResource: NameKind, NodeResource: NodeKind,
	} {
		c, ok := crds[gvr]
		if !ok {
			t.Errorf("no CRD serves %v", gvr)
			continue
		}
		if c.Kind != "CustomResourceDefinition" || c.Spec.Names.Kind != kind || c.Spec.Scope != "Cluster" ||
			c.Metadata.Name != gvr.Resource+"."+gvr.Group {
			t.Errorf("CRD of %v: kind %q, names.kind %q, scope %q, name %q", gvr, c.Kind, c.Spec.Names.Kind, c.Spec.Scope, c.Metadata.Name)
		}
		if len(c.Spec.Versions) != 1 || !c.Spec.Versions[0].Served || !c.Spec.Versions[0].Storage {
			t.Errorf("CRD of %v: want one served storage version", gvr)
		}
	}
}

func TestVolumeCRDHasPrinterColumns(t *testing.T) {
	c := loadCRDs(t)[VolumeResource]
	var got []string
	for _, col := range c.Spec.Versions[0].Columns {
		got = append(got, col.Name+"="+col.JSONPath)
	}
	want := []string{
		"Size=.status.size", "Replicas=.status.replicas", "InSync=.status.inSync", "Zones=.status.zones",
		"Primary=.spec.primary", "Epoch=.spec.epoch", "Health=.status.health", "Sync=.status.sync",
		"Attached=.spec.attachment.nodeID", "Volume-Name=.spec.name", "Age=.metadata.creationTimestamp",
	}
	if !slices.Equal(got, want) {
		t.Errorf("printer columns:\n got %q\nwant %q", got, want)
	}
}

// TestCRDSchemasAcceptWhatTheStoreWrites validates the objects the store
// writes for extreme records against the CRD schemas, and checks that the
// schemas declare every field, since the API server silently drops the
// fields a schema does not declare.
func TestCRDSchemasAcceptWhatTheStoreWrites(t *testing.T) {
	crds := loadCRDs(t)
	for _, tc := range schemaCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			raw := crds[tc.gvr].Spec.Versions[0].Schema.OpenAPIV3Schema
			var s spec.Schema
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("schema of %v: %v", tc.gvr, err)
			}
			res := validate.NewSchemaValidator(&s, nil, "", strfmt.Default).Validate(tc.obj.Object)
			for _, err := range res.Errors {
				t.Errorf("schema refuses the object: %v", err)
			}
			for _, path := range undeclared(&s, tc.obj.Object, "") {
				t.Errorf("schema does not declare %s: the API server would drop it", path)
			}
		})
	}
}

type schemaCase struct {
	name string
	gvr  schema.GroupVersionResource
	obj  *unstructured.Unstructured
}

func schemaCases(t *testing.T) []schemaCase {
	full := store.Volume{
		ID: "vol-0f1e", Name: strings.Repeat("名", 42) + "xy", Size: math.MaxInt64,
		Parameters: map[string]string{"replicas": "3", "csi.storage.k8s.io/pvc/name": "data"}, Fingerprint: "ab",
		Layout: replication.Layout{VolumeID: "vol-0f1e", Size: math.MaxInt64, Epoch: math.MaxUint64, Primary: "n1",
			AttachmentGeneration: math.MaxUint64, Replicas: []replication.ReplicaInfo{
				{NodeID: "n1", Zone: "a", Address: "10.0.0.1:7000", State: replication.InSync},
				{NodeID: "n2", Zone: "b", Address: "10.0.0.2:7000", State: replication.Syncing},
				{NodeID: "n3", Zone: "c", Address: "10.0.0.3:7000", State: replication.Faulted},
			}},
		Attachment: store.Attachment{NodeID: "n9", Generation: math.MaxUint64}, MinInSyncReplicas: 2,
		Created: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), Revision: math.MaxUint64,
	}
	bare := store.Volume{ID: "V", Name: "\x00", Size: 1, Layout: replication.Layout{VolumeID: "V", Size: 1},
		Created: time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), Revision: 1}
	node := store.Node{ID: strings.Repeat("ü", 128), Zone: "a", Topology: map[string]string{"k": "v"},
		DataAddress: "[::1]:1", APIAddress: "[::1]:2", CapacityBytes: math.MaxInt64,
		LastHeartbeat: time.Now(), Revision: 7}
	var cases []schemaCase
	add := func(name string, gvr schema.GroupVersionResource, kind, key string, typed any) {
		u, err := toUnstructured(kind, objectName(key), "", typed)
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, schemaCase{name, gvr, u})
	}
	fullObj, bareObj, nodeObj := encodeVolume(full), encodeVolume(bare), encodeNode(node)
	add("volume with every field at its largest", VolumeResource, VolumeKind, full.ID, &fullObj)
	add("volume with every field at its smallest", VolumeResource, VolumeKind, bare.ID, &bareObj)
	add("claim", NameResource, NameKind, full.Name, &nameObject{Spec: nameSpec{Name: full.Name, VolumeID: full.ID}})
	add("node", NodeResource, NodeKind, node.ID, &nodeObj)
	return cases
}

// undeclared lists the paths of obj that s does not declare. metadata is
// the API server's.
func undeclared(s *spec.Schema, obj any, path string) []string {
	var out []string
	if list, ok := obj.([]any); ok && s.Items != nil && s.Items.Schema != nil {
		for i, child := range list {
			out = append(out, undeclared(s.Items.Schema, child, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	m, ok := obj.(map[string]any)
	if !ok || path == ".metadata" {
		return out
	}
	for k, child := range m {
		cs, ok := s.Properties[k]
		if !ok && s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
			cs, ok = *s.AdditionalProperties.Schema, true
		}
		if !ok {
			out = append(out, path+"."+k)
			continue
		}
		out = append(out, undeclared(&cs, child, path+"."+k)...)
	}
	return out
}
