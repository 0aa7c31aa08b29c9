package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"k8s.io/klog/v2"

	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// volumeInfo describes the local replica of a volume and, on its primary,
// every replica.
type volumeInfo struct {
	meta     blockstore.Meta
	primary  bool
	layout   *replication.Layout
	replicas []replication.ReplicaStatus
}

// createReplica makes an empty replica of id, or returns the existing one
// when it has the same size.
func (a *Agent) createReplica(id string, size int64) (volumeInfo, error) {
	release, err := a.begin(id)
	if err != nil {
		return volumeInfo{}, err
	}
	defer release()
	if st, ok := a.state(id); ok {
		if got := st.replica.Size(); got != size {
			return volumeInfo{}, fmt.Errorf("create replica %s of %d bytes: %w (it holds %d bytes)",
				id, size, blockstore.ErrExists, got)
		}
		return describe(st), nil
	}

	r, err := blockstore.Create(a.volumeDir(id), id, size)
	if err != nil {
		return volumeInfo{}, err
	}
	a.mu.Lock()
	a.replicas[id] = r
	a.mu.Unlock()
	klog.InfoS("Created replica", "volume", id, "node", a.cfg.NodeID, "size", size)
	return describe(volumeState{replica: r}), nil
}

// expandReplica grows the replica of id to size bytes.
func (a *Agent) expandReplica(id string, size int64) (volumeInfo, error) {
	release, err := a.begin(id)
	if err != nil {
		return volumeInfo{}, err
	}
	defer release()
	st, ok := a.state(id)
	if !ok {
		return volumeInfo{}, fmt.Errorf("expand replica %s: %w", id, ErrNotFound)
	}
	from := st.replica.Size()
	if err := st.replica.Grow(size); err != nil {
		return volumeInfo{}, err
	}
	if from != size {
		klog.InfoS("Expanded replica", "volume", id, "node", a.cfg.NodeID, "from", from, "to", size)
	}
	return describe(st), nil
}

// deleteReplica stops serving id and removes its replica. A missing
// replica is not an error; a leftover directory is removed all the same.
func (a *Agent) deleteReplica(id string) error {
	release, err := a.begin(id)
	if err != nil {
		return err
	}
	defer release()

	a.mu.Lock()
	r, p := a.replicas[id], a.primaries[id]
	delete(a.replicas, id)
	delete(a.primaries, id)
	delete(a.layouts, id)
	a.mu.Unlock()

	if p != nil {
		p.Close()
	}
	a.repl.CloseVolume(id)
	if r != nil {
		r.Close()
	}
	if err := blockstore.Remove(a.volumeDir(id)); err != nil {
		return fmt.Errorf("delete replica %s: %w", id, err)
	}
	klog.InfoS("Deleted replica", "volume", id, "node", a.cfg.NodeID, "wasPrimary", p != nil)
	return nil
}

// describe reports the volume held in st.
func describe(st volumeState) volumeInfo {
	info := volumeInfo{meta: st.replica.Meta(), layout: st.currentLayout()}
	if st.primary != nil && st.primary.Fenced() == nil {
		info.primary = true
		info.replicas = st.primary.Status()
		// The primary comes first; order the others for stable output.
		slices.SortFunc(info.replicas[1:], func(x, y replication.ReplicaStatus) int {
			return strings.Compare(x.NodeID, y.NodeID)
		})
	}
	return info
}

// volume describes the volume id.
func (a *Agent) volume(id string) (volumeInfo, error) {
	st, ok := a.state(id)
	if !ok {
		return volumeInfo{}, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	return describe(st), nil
}

// volumes describes every volume with a local replica, by id.
func (a *Agent) volumes() []volumeInfo {
	var out []volumeInfo
	for _, id := range a.volumeIDs() {
		if st, ok := a.state(id); ok {
			out = append(out, describe(st))
		}
	}
	return out
}

// checksumBuffer bounds the memory one checksum uses, whatever the
// volume size.
const checksumBuffer = 1 << 20

// checksum returns the hex SHA-256 of the local replica's data and the
// number of bytes hashed. It reads through its own file descriptor, so a
// concurrent delete does not disturb it.
func (a *Agent) checksum(ctx context.Context, id string) (string, int64, error) {
	st, ok := a.state(id)
	if !ok {
		return "", 0, fmt.Errorf("volume %s: %w", id, ErrNotFound)
	}
	f, err := os.Open(st.replica.DataPath())
	if err != nil {
		return "", 0, fmt.Errorf("checksum %s: %w", id, err)
	}
	defer f.Close()

	size := st.replica.Size()
	if l := st.currentLayout(); l != nil && l.Size < size {
		size = l.Size // grown ahead of a layout: the rest is not the volume's yet
	}
	h := sha256.New()
	src := ctxReader{ctx: ctx, r: io.NewSectionReader(f, 0, size)}
	n, err := io.CopyBuffer(h, src, make([]byte, checksumBuffer))
	if err != nil {
		return "", 0, fmt.Errorf("checksum %s: %w", id, err)
	}
	if n != size {
		return "", 0, fmt.Errorf("checksum %s: read %d of %d bytes: %w", id, n, size, io.ErrUnexpectedEOF)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ctxReader stops a long read once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
