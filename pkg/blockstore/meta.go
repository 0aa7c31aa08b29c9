package blockstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"

	"github.com/trireme-csi/trireme/internal/atomicfile"
)

// metaVersion is the on-disk metadata format version written by this code.
const metaVersion = 1

var (
	metaMagic  = [4]byte{'T', 'R', 'M', 'D'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// ErrCorruptMeta means a metadata file failed its checksum or could not be
// parsed.
var ErrCorruptMeta = errors.New("corrupt replica metadata")

// Meta is the persisted description of one replica. It is small and written
// atomically: a reader sees either the old or the new version, never a mix.
type Meta struct {
	// VolumeID names the volume this replica belongs to.
	VolumeID string `json:"volumeID"`
	// Size is the volume size in bytes.
	Size int64 `json:"size"`
	// Epoch is the highest volume epoch this replica has seen. Requests
	// carrying a lower epoch are refused.
	Epoch uint64 `json:"epoch"`
	// Rebuilding is true from the moment a replica starts receiving a
	// background copy until the copy is complete and flushed. A replica
	// that is rebuilding never holds every acknowledged write and must
	// never be chosen to serve.
	Rebuilding bool `json:"rebuilding"`
	// Incarnation is drawn at random when the replica is created. A
	// primary that tracks what a replica missed while it was away resumes
	// it with only those regions when the incarnation is unchanged: a
	// replica deleted and created again meanwhile holds none of its old
	// data. Zero in replicas made before the field existed.
	Incarnation uint64 `json:"incarnation,omitempty"`
}

// encodeMeta serialises m as magic, version, length, JSON body, CRC32C.
func encodeMeta(m Meta) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Write(metaMagic[:])
	_ = binary.Write(&buf, binary.BigEndian, uint32(metaVersion))
	_ = binary.Write(&buf, binary.BigEndian, uint32(len(body)))
	buf.Write(body)
	_ = binary.Write(&buf, binary.BigEndian, crc32.Checksum(body, castagnoli))
	return buf.Bytes(), nil
}

// maxMetaBody bounds the body length a decoder accepts.
const maxMetaBody = 64 << 10

// decodeMeta parses what encodeMeta wrote and verifies the checksum.
func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) < 16 || !bytes.Equal(b[:4], metaMagic[:]) {
		return m, fmt.Errorf("%w: bad header", ErrCorruptMeta)
	}
	version := binary.BigEndian.Uint32(b[4:8])
	if version != metaVersion {
		return m, fmt.Errorf("%w: unsupported version %d", ErrCorruptMeta, version)
	}
	n := binary.BigEndian.Uint32(b[8:12])
	if n > maxMetaBody || int(n)+16 != len(b) {
		return m, fmt.Errorf("%w: bad length %d", ErrCorruptMeta, n)
	}
	body := b[12 : 12+n]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[12+n:]) {
		return m, fmt.Errorf("%w: checksum mismatch", ErrCorruptMeta)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrCorruptMeta, err)
	}
	return m, nil
}

// writeMetaFile replaces path with m durably: temp file, fsync, rename,
// fsync of the directory.
func writeMetaFile(path string, m Meta) error {
	b, err := encodeMeta(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

func readMetaFile(path string) (Meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Meta{}, err
	}
	return decodeMeta(b)
}
