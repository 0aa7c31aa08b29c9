package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/api"
	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/nbd"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// openReplicas opens every replica under dir. A directory that does not
// hold a usable replica is logged and left alone, so that one damaged
// volume does not keep the node's other volumes offline.
func openReplicas(dir string) (map[string]*blockstore.Replica, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read volumes dir: %w", err)
	}
	out := map[string]*blockstore.Replica{}
	for _, e := range entries {
		if r := openReplica(filepath.Join(dir, e.Name()), e); r != nil {
			out[e.Name()] = r
		}
	}
	return out, nil
}

func openReplica(dir string, e os.DirEntry) *blockstore.Replica {
	id := e.Name()
	if !e.IsDir() || api.ValidateVolumeID(id) != nil {
		klog.InfoS("Ignoring unexpected entry in volumes dir", "path", dir)
		return nil
	}
	r, err := blockstore.Open(dir)
	if errors.Is(err, blockstore.ErrNotFound) {
		klog.InfoS("Ignoring unfinished replica; CreateReplica completes it", "volume", id, "path", dir)
		return nil
	}
	if err != nil {
		klog.ErrorS(err, "Cannot open replica; it stays offline", "volume", id, "path", dir)
		return nil
	}
	if m := r.Meta(); m.VolumeID != id {
		klog.ErrorS(nil, "Replica belongs to another volume; it stays offline", "volume", id, "path", dir, "metaVolume", m.VolumeID)
		r.Close()
		return nil
	}
	klog.InfoS("Opened replica", "volume", id, "size", r.Size(), "epoch", r.Epoch(), "rebuilding", r.Meta().Rebuilding)
	return r
}

// begin admits one operation on volume id, refusing a second one while
// the first runs and any once shutdown has begun. The caller must call the
// returned function when done.
func (a *Agent) begin(id string) (func(), error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, ErrShuttingDown
	}
	if _, busy := a.inflight[id]; busy {
		return nil, fmt.Errorf("volume %s: %w", id, ErrBusy)
	}
	a.inflight[id] = struct{}{}
	a.ops.Add(1)
	return func() {
		a.mu.Lock()
		delete(a.inflight, id)
		a.mu.Unlock()
		a.ops.Done()
	}, nil
}

// volumeState is what the agent holds for one volume at one moment.
type volumeState struct {
	replica *blockstore.Replica
	layout  *replication.Layout // recorded by SetLayout, or nil
	primary *replication.Primary
}

// state returns what the agent holds for id, or false without a replica.
func (a *Agent) state(id string) (volumeState, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.replicas[id]
	if !ok {
		return volumeState{}, false
	}
	st := volumeState{replica: r, primary: a.primaries[id]}
	if l, ok := a.layouts[id]; ok {
		st.layout = &l
	}
	return st, true
}

// currentLayout is the newest layout known: a running primary's, which
// moves ahead on fault and sync reports, or else the recorded one.
func (s volumeState) currentLayout() *replication.Layout {
	if s.primary != nil {
		l := s.primary.Layout()
		return &l
	}
	return s.layout
}

func (a *Agent) volumeIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.replicas))
	for id := range a.replicas {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// localReplicas gives the replication server the replicas on this node.
type localReplicas struct{ a *Agent }

// Replica returns the local replica of volumeID, or false.
func (v localReplicas) Replica(volumeID string) (*blockstore.Replica, bool) {
	v.a.mu.Lock()
	defer v.a.mu.Unlock()
	r, ok := v.a.replicas[volumeID]
	return r, ok
}

// primaryExports serves the volumes this node is primary of over NBD,
// under the names api.ExportName makes. A client is bound to the primary
// that was running when it connected: once that primary stops, its
// requests fail and it must reconnect, so no connection outlives a change
// of primary.
type primaryExports struct{ a *Agent }

var _ nbd.Export = (*replication.Primary)(nil)

// Lookup returns the running primary of the volume the name gives. A
// primary fenced by a newer epoch is not offered: it can serve nothing.
// A name with an attachment generation lower than the primary's is
// refused with replication.ErrStaleAttachment wrapped in nbd.ErrPolicy
// (NBD_REP_ERR_POLICY); a higher or equal one is served
// through an attachedExport, which refuses requests once a later publish
// raises the primary's generation past it. A bare volume id is
// administrative access and is never fenced (see api.ExportName); it is
// served through an attachedExport too, at generation 0.
func (e primaryExports) Lookup(name string) (nbd.Export, error) {
	id, gen, err := api.ParseExportName(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", nbd.ErrNoExport, err)
	}
	e.a.mu.Lock()
	p, ok := e.a.primaries[id]
	e.a.mu.Unlock()
	switch {
	case !ok || p.Fenced() != nil:
		return nil, fmt.Errorf("volume %s: %w", id, nbd.ErrNoExport)
	}
	x := &attachedExport{Primary: p, generation: gen}
	if err := x.check(); err != nil {
		return nil, err
	}
	return x, nil
}

// List returns the ids of the volumes this node is primary of, sorted.
func (e primaryExports) List() []string {
	e.a.mu.Lock()
	defer e.a.mu.Unlock()
	ids := make([]string, 0, len(e.a.primaries))
	for id, p := range e.a.primaries {
		if p.Fenced() == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
