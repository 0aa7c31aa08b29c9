package csi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// stageRecord is what the Node service remembers of a staged volume, in
// memory and in a JSON file under the state directory, so that a
// restarted agent finds its staged volumes again.
type stageRecord struct {
	VolumeID    string   `json:"volumeID"`
	StagingPath string   `json:"stagingPath"`
	Block       bool     `json:"block"`
	FSType      string   `json:"fsType,omitempty"`
	MountFlags  []string `json:"mountFlags,omitempty"`
	// ReadOnly is set for volumes staged for SINGLE_NODE_READER_ONLY:
	// attached and mounted read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// Device is the block device the volume is attached as; it changes
	// when a restarted agent attaches the volume again.
	Device string `json:"device"`
	// CreatedStaging says the Node service made the staging directory,
	// and removes it on unstage.
	CreatedStaging bool `json:"createdStaging,omitempty"`
	// Targets maps each publish target to its read-only flag.
	Targets map[string]bool `json:"targets,omitempty"`
	// Generation is the attachment generation the volume was staged at;
	// a restarted agent attaches again with it.
	//
	// Known shortcoming: a stage at a newer generation over a record of
	// an older one (a volume published again to this node without being
	// unstaged) keeps the older generation, whose attachment the primary
	// refuses; it must be unstaged and staged again.
	Generation uint64 `json:"generation,omitempty"`
}

// compatible says whether a request may be answered by this record
// unchanged (an idempotent retry).
func (r *stageRecord) compatible(req stageRequest) bool {
	return r.Block == req.block && (r.Block || r.FSType == req.fsType) && r.ReadOnly == req.readerOnly
}

// mountOptions are the options of the staging mount: the capability's
// mount flags, and "ro" for a read-only volume.
func (r *stageRecord) mountOptions() []string {
	opts := append([]string(nil), r.MountFlags...)
	if r.ReadOnly {
		opts = append(opts, "ro")
	}
	return opts
}

// stateStore keeps one file per staged volume in dir.
type stateStore struct{ dir string }

const stateSuffix = ".json"

func (s stateStore) path(volumeID string) string {
	return filepath.Join(s.dir, volumeID+stateSuffix)
}

// save writes r atomically: a temporary file, fsync, rename, fsync of
// the directory.
func (s stateStore) save(r *stageRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("save state of %s: %w", r.VolumeID, err)
	}
	tmp := s.path(r.VolumeID) + ".tmp"
	if err := writeSynced(tmp, b); err != nil {
		return fmt.Errorf("save state of %s: %w", r.VolumeID, err)
	}
	if err := os.Rename(tmp, s.path(r.VolumeID)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("save state of %s: %w", r.VolumeID, err)
	}
	return syncDir(s.dir)
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// remove deletes the record of volumeID; a missing one is no error.
func (s stateStore) remove(volumeID string) error {
	err := os.Remove(s.path(volumeID))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state of %s: %w", volumeID, err)
	}
	return nil
}

// load reads every record in dir.
func (s stateStore) load() ([]*stageRecord, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var out []*stageRecord
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), stateSuffix) {
			continue
		}
		r, err := s.read(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s stateStore) read(path string) (*stageRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	r := &stageRecord{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("read state %s: %w", path, err)
	}
	if !wellFormedID(r.VolumeID) || filepath.Base(path) != r.VolumeID+stateSuffix {
		return nil, fmt.Errorf("read state %s: names volume %q", path, r.VolumeID)
	}
	return r, nil
}
