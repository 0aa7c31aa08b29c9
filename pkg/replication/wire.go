package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"sync"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// Wire format. Every frame, in both directions, is a fixed 48-byte header
// followed by an optional payload:
//
//	0  magic      "TRRP"
//	4  version    uint8
//	5  op         uint8
//	6  flags      uint16
//	8  id         uint64  request id; a reply carries its request's id
//	16 epoch      uint64  volume epoch of the sender
//	24 offset     uint64
//	32 length     uint32  range length (zero/read); payload length for writes
//	36 status     uint32  reply status, zero in requests
//	40 payloadLen uint32
//	44 crc        uint32  CRC32C of header bytes 0..43 and the payload
//
// All integers are big endian. The protocol is a plain byte stream, so it
// runs unchanged over TLS.
const (
	headerSize  = 48
	wireVersion = 1
	maxPayload  = 32<<20 + 4096
	maxVolumeID = 256
)

var wireMagic = [4]byte{'T', 'R', 'R', 'P'}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Op is a frame's operation code.
type Op uint8

// Operations. Requests flow from the primary to a replica; replies back.
const (
	OpHello     Op = 1 // payload: volume id; binds the connection to a volume
	OpWrite     Op = 2 // payload: data at offset
	OpZero      Op = 3 // punch [offset, offset+length)
	OpFlush     Op = 4 // make every earlier write durable
	OpRead      Op = 5 // reply payload: length bytes at offset
	OpSyncStart Op = 6 // a background copy begins: mark the replica rebuilding
	OpSyncDone  Op = 7 // the copy is complete: clear the rebuilding mark
	OpReply     Op = 8
	OpChecksum  Op = 9 // reply payload: 8-byte checksum of [offset, offset+length)
)

// A reply to OpHello carries the replica's incarnation (see
// blockstore.Meta) in its offset field.

// Frame flags.
const (
	FlagFUA    uint16 = 1 << 0 // the write must be durable before the reply
	FlagCopy   uint16 = 1 << 1 // the frame carries background copy data
	knownFlags        = FlagFUA | FlagCopy
)

// Status is the result carried in a reply.
type Status uint32

// Reply statuses.
const (
	StatusOK            Status = 0
	StatusStaleEpoch    Status = 1
	StatusUnknownVolume Status = 2
	StatusBadRequest    Status = 3
	StatusIOError       Status = 4
	StatusNotBound      Status = 5
	StatusWrongNode     Status = 6
	StatusForbidden     Status = 7
)

// Errors a replica reports, one per status, so that callers can use
// errors.Is.
var (
	ErrStaleEpoch    = errors.New("stale epoch")
	ErrUnknownVolume = errors.New("unknown volume")
	ErrBadRequest    = errors.New("bad request")
	ErrRemoteIO      = errors.New("replica i/o error")
	ErrNotBound      = errors.New("connection not bound to a volume")
	ErrWrongNode     = errors.New("replica belongs to another node")
	ErrForbidden     = errors.New("peer is not the volume's primary at that epoch")
)

// Decoding errors.
var (
	ErrBadMagic    = errors.New("bad frame magic")
	ErrBadVersion  = errors.New("unsupported frame version")
	ErrBadChecksum = errors.New("frame checksum mismatch")
	ErrTooLarge    = errors.New("frame payload too large")
)

// Err returns the error a status stands for, or nil for StatusOK.
func (s Status) Err() error {
	switch s {
	case StatusOK:
		return nil
	case StatusStaleEpoch:
		return ErrStaleEpoch
	case StatusUnknownVolume:
		return ErrUnknownVolume
	case StatusBadRequest:
		return ErrBadRequest
	case StatusNotBound:
		return ErrNotBound
	case StatusWrongNode:
		return ErrWrongNode
	case StatusForbidden:
		return ErrForbidden
	default:
		return ErrRemoteIO
	}
}

// Frame is one decoded protocol frame.
type Frame struct {
	Op      Op
	Flags   uint16
	ID      uint64
	Epoch   uint64
	Offset  uint64
	Length  uint32
	Status  Status
	Payload []byte

	// payloadSum, when hasPayloadSum is set, is the CRC-32C of Payload,
	// computed by whoever filled it (see readSummed). Whatever changes
	// Payload afterwards must clear hasPayloadSum.
	payloadSum    uint32
	hasPayloadSum bool
}

func (f *Frame) putHeader(h []byte) {
	copy(h[0:4], wireMagic[:])
	h[4] = wireVersion
	h[5] = byte(f.Op)
	binary.BigEndian.PutUint16(h[6:], f.Flags)
	binary.BigEndian.PutUint64(h[8:], f.ID)
	binary.BigEndian.PutUint64(h[16:], f.Epoch)
	binary.BigEndian.PutUint64(h[24:], f.Offset)
	binary.BigEndian.PutUint32(h[32:], f.Length)
	binary.BigEndian.PutUint32(h[36:], uint32(f.Status))
	binary.BigEndian.PutUint32(h[40:], uint32(len(f.Payload)))
	crc := crc32.Checksum(h[:44], crcTable)
	if f.hasPayloadSum {
		crc = crcCombine(crc, f.payloadSum, len(f.Payload))
	} else {
		crc = crc32.Update(crc, crcTable, f.Payload)
	}
	binary.BigEndian.PutUint32(h[44:], crc)
}

// WriteTo writes the frame to w as header then payload.
func (f *Frame) WriteTo(w io.Writer) (int64, error) {
	var h [headerSize]byte
	f.putHeader(h[:])
	n, err := w.Write(h[:])
	if err != nil || len(f.Payload) == 0 {
		return int64(n), err
	}
	m, err := w.Write(f.Payload)
	return int64(n + m), err
}

// decodeHeader parses a header without its payload. It checks magic,
// version and the payload bound; the checksum needs the payload and is
// checked by verify.
func decodeHeader(h []byte) (Frame, uint32, error) {
	var f Frame
	if len(h) < headerSize {
		return f, 0, io.ErrUnexpectedEOF
	}
	if [4]byte(h[0:4]) != wireMagic {
		return f, 0, ErrBadMagic
	}
	if h[4] != wireVersion {
		return f, 0, fmt.Errorf("%w: %d", ErrBadVersion, h[4])
	}
	f.Op = Op(h[5])
	f.Flags = binary.BigEndian.Uint16(h[6:])
	f.ID = binary.BigEndian.Uint64(h[8:])
	f.Epoch = binary.BigEndian.Uint64(h[16:])
	f.Offset = binary.BigEndian.Uint64(h[24:])
	f.Length = binary.BigEndian.Uint32(h[32:])
	f.Status = Status(binary.BigEndian.Uint32(h[36:]))
	n := binary.BigEndian.Uint32(h[40:])
	if n > maxPayload {
		return f, 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	return f, binary.BigEndian.Uint32(h[44:]), nil
}

func verify(h, payload []byte, crc uint32) error {
	got := crc32.Update(crc32.Checksum(h[:44], crcTable), crcTable, payload)
	if got != crc {
		return ErrBadChecksum
	}
	return nil
}

// ReadFrame reads and verifies one frame from r. The payload is read into
// a newly allocated buffer.
func ReadFrame(r io.Reader) (Frame, error) {
	return readFrame(r, maxPayload, nil)
}

// readFrame reads one frame whose payload is at most limit bytes. Before
// allocating the payload it calls reserve, if set, with the payload size.
func readFrame(r io.Reader, limit uint32, reserve func(int64)) (Frame, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	f, crc, err := decodeHeader(h[:])
	if err != nil {
		return f, err
	}
	n := binary.BigEndian.Uint32(h[40:])
	if n > limit {
		return f, fmt.Errorf("%w: %d bytes, at most %d here", ErrTooLarge, n, limit)
	}
	if reserve != nil {
		reserve(int64(n))
	}
	if n > 0 {
		f.Payload = payloadBuffer(f, int(n))
		if _, err := io.ReadFull(r, f.Payload); err != nil {
			return f, err
		}
	}
	if err := verify(h[:], f.Payload, crc); err != nil {
		return f, err
	}
	return f, nil
}

// copyBufferSize is the size of the pooled buffers copy data is read into:
// the default copy chunk.
const copyBufferSize = 1 << 20

// copyBuffers recycles the aligned buffers of copy data, which would
// otherwise cost an allocation and its zeroing per megabyte copied.
var copyBuffers = sync.Pool{New: func() any {
	b := blockstore.AlignedBuffer(copyBufferSize)
	return &b
}}

// payloadBuffer returns the buffer a frame's payload is read into: copy
// data gets copyBuffer's, aligned for the replica's direct writes when it
// is large.
func payloadBuffer(f Frame, n int) []byte {
	if f.Op != OpWrite || f.Flags&FlagCopy == 0 || n%blockstore.DirectAlign != 0 {
		return make([]byte, n)
	}
	return copyBuffer(n)
}

// copyBuffer returns a buffer of n bytes for copy data: from the pool
// when n fills at least half a pooled buffer, so that memory budgeted by
// payload size holds at most twice that; a small frame (a dirty-region
// resync sends single 4 KiB grains) gets a buffer of its own size.
func copyBuffer(n int) []byte {
	switch {
	case n > copyBufferSize:
		return blockstore.AlignedBuffer(n)
	case n > copyBufferSize/2:
		return (*copyBuffers.Get().(*[]byte))[:n]
	default:
		return make([]byte, n)
	}
}

// recycleCopyBuffer returns a pooled buffer of copyBuffer to the pool once
// nothing refers to it any more.
func recycleCopyBuffer(b []byte) {
	if cap(b) == copyBufferSize {
		b = b[:copyBufferSize]
		copyBuffers.Put(&b)
	}
}

// validateRequest checks a decoded request against the volume size before
// anything touches the disk.
func validateRequest(f *Frame, size int64) error {
	if f.Flags&^knownFlags != 0 {
		return fmt.Errorf("%w: unknown flags %#x", ErrBadRequest, f.Flags)
	}
	var length uint64
	switch f.Op {
	case OpWrite:
		if uint32(len(f.Payload)) != f.Length {
			return fmt.Errorf("%w: length %d, payload %d", ErrBadRequest, f.Length, len(f.Payload))
		}
		length = uint64(f.Length)
	case OpZero, OpRead, OpChecksum:
		if len(f.Payload) != 0 {
			return fmt.Errorf("%w: unexpected payload", ErrBadRequest)
		}
		length = uint64(f.Length)
		if f.Op == OpRead && length > maxPayload-4096 {
			return fmt.Errorf("%w: read of %d bytes", ErrBadRequest, length)
		}
	case OpFlush, OpSyncStart, OpSyncDone:
		return nil
	default:
		return fmt.Errorf("%w: unknown op %d", ErrBadRequest, f.Op)
	}
	if length == 0 || f.Offset > uint64(size) || length > uint64(size)-f.Offset {
		return fmt.Errorf("%w: range %d+%d outside %d-byte volume", ErrBadRequest, f.Offset, length, size)
	}
	return nil
}

// helloPayload names the volume a connection is for and the node the
// primary expects to reach, so a replica at the wrong address refuses.
func helloPayload(volumeID, nodeID string) []byte {
	return []byte(volumeID + "\x00" + nodeID)
}

// parseHello splits a hello payload into volume and node id.
func parseHello(b []byte) (volumeID, nodeID string, err error) {
	vol, node, ok := strings.Cut(string(b), "\x00")
	if !ok || vol == "" || len(vol) > maxVolumeID || len(node) > maxVolumeID {
		return "", "", fmt.Errorf("%w: malformed hello", ErrBadRequest)
	}
	return vol, node, nil
}
