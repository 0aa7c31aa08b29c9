package replication

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/trireme-csi/trireme/pkg/blockstore"
)

// TestCopyWritesKeepTheirPlaceInTheStream sends, without waiting for any
// reply, copy frames (which the server writes to disk off its apply
// loop, several at once), copy frames overlapping the ones still in
// flight, live writes onto the blocks just copied, zeroes, reads and
// checksums. Every reply must be OK and exactly one per request; every
// read must see the frames sent before it and none after; and the replica
// must end up as if the frames had been applied one by one.
func TestCopyWritesKeepTheirPlaceInTheStream(t *testing.T) {
	const mib, size = 1 << 20, 12 << 20
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	r := n.create(t, vol, size)
	c, rd := dialRaw(t, n)
	if st := roundTrip(t, c, rd, hello(1)).Status; st != StatusOK {
		t.Fatalf("hello status %d", st)
	}
	if st := roundTrip(t, c, rd, Frame{Op: OpSyncStart, ID: 2, Epoch: 1}).Status; st != StatusOK {
		t.Fatalf("sync start status %d", st)
	}

	model := make([]byte, size)
	reads := map[uint64][]byte{} // request id → what the read must return
	var frames []Frame
	id := uint64(10)
	add := func(f Frame) {
		id++
		f.ID, f.Epoch = id, 1
		frames = append(frames, f)
		switch f.Op {
		case OpWrite:
			copy(model[f.Offset:], f.Payload)
		case OpZero:
			clear(model[f.Offset : f.Offset+uint64(f.Length)])
		case OpRead:
			reads[id] = bytes.Clone(model[f.Offset : f.Offset+uint64(f.Length)])
		}
	}
	pattern := func(p []byte, seed int) []byte {
		for i := range p {
			p[i] = byte(seed*31 + i*13 + i>>12)
		}
		return p
	}
	copyFrame := func(off, n int64, seed int) Frame {
		p := pattern(blockstore.AlignedBuffer(int(n)), seed)
		return Frame{Op: OpWrite, Flags: FlagCopy, Offset: uint64(off), Length: uint32(n), Payload: p}
	}
	for i := range int64(10) {
		off := i * mib
		add(copyFrame(off, mib, int(i)))
		// Overlaps the copy just sent, which may still be in flight.
		add(copyFrame(off+mib/2, mib, int(i)+100))
		// Live writes onto the copied blocks, unaligned.
		add(Frame{Op: OpWrite, Offset: uint64(off + 4095), Length: 3000, Payload: pattern(make([]byte, 3000), int(i)+200)})
		if i%3 == 0 {
			add(Frame{Op: OpRead, Offset: uint64(off + mib/2 - 8192), Length: 16384})
		}
		add(copyFrame(off+mib/4, 64<<10, int(i)+300))
		if i%4 == 1 {
			add(Frame{Op: OpZero, Offset: uint64(off + mib/4 + 1000), Length: 10000})
		}
		// An unaligned copy frame: written in place, in order.
		add(Frame{Op: OpWrite, Flags: FlagCopy, Offset: uint64(off + mib - 700), Length: 1400, Payload: pattern(make([]byte, 1400), int(i)+400)})
	}
	add(Frame{Op: OpRead, Offset: 0, Length: size})
	add(Frame{Op: OpChecksum, Offset: 0, Length: size})
	sumID := id
	var sumReply []byte
	add(Frame{Op: OpSyncDone})

	go func() {
		for _, f := range frames {
			if _, err := f.WriteTo(c); err != nil {
				return
			}
		}
	}()
	replied := map[uint64]bool{}
	for range frames {
		f, err := ReadFrame(rd)
		if err != nil {
			t.Fatalf("after %d replies: %v", len(replied), err)
		}
		if replied[f.ID] || f.ID <= 10 || f.ID > id {
			t.Fatalf("reply for id %d: unexpected or repeated", f.ID)
		}
		replied[f.ID] = true
		if f.Status != StatusOK {
			t.Fatalf("request %d: status %d", f.ID, f.Status)
		}
		if f.ID == sumID {
			sumReply = f.Payload
		}
		if want, ok := reads[f.ID]; ok {
			if !bytes.Equal(f.Payload, want) {
				t.Fatalf("read %d: byte %d differs from the frames sent before it", f.ID, firstDiff(f.Payload, want))
			}
		}
	}
	sum, err := r.Checksum(0, size)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := r.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		i := firstDiff(got, model)
		t.Fatalf("replica byte %d (MiB %d) is %#x, want %#x", i, i>>20, got[i], model[i])
	}
	if r.Meta().Rebuilding {
		t.Fatal("replica still marked rebuilding after the end-of-copy marker")
	}
	if want := binary.BigEndian.AppendUint64(nil, sum); !bytes.Equal(sumReply, want) {
		t.Fatalf("checksum reply %x, want the final data's %x", sumReply, want)
	}
}

// TestCopyWritesAcrossAnEpochRaiseAreNotRefused: a primary whose layout
// changes in the middle of a copy stamps the next frames with the higher
// epoch. The copy frames before the change were sent first and must be
// applied first: a replica that let a later frame raise its epoch before
// an earlier one is written would refuse that one as stale, and the
// primary, taking itself for deposed, would stop serving.
func TestCopyWritesAcrossAnEpochRaiseAreNotRefused(t *testing.T) {
	const chunk, frames = 256 << 10, 48
	n := startNode(t, "a", "zone-a", "127.0.0.1")
	r := n.create(t, vol, chunk*frames)
	c, rd := dialRaw(t, n)
	if st := roundTrip(t, c, rd, hello(1)).Status; st != StatusOK {
		t.Fatalf("hello status %d", st)
	}
	go func() {
		for i := range frames {
			p := blockstore.AlignedBuffer(chunk)
			p[0] = byte(i + 1)
			f := Frame{Op: OpWrite, Flags: FlagCopy, ID: uint64(10 + i), Epoch: uint64(1 + i/2),
				Offset: uint64(i * chunk), Length: chunk, Payload: p}
			if _, err := f.WriteTo(c); err != nil {
				return
			}
		}
	}()
	for range frames {
		f, err := ReadFrame(rd)
		if err != nil {
			t.Fatal(err)
		}
		if f.Status != StatusOK {
			t.Fatalf("copy frame %d refused with status %d (replica at epoch %d)", f.ID, f.Status, f.Epoch)
		}
	}
	if got, want := r.Epoch(), uint64(frames/2); got != want {
		t.Fatalf("replica epoch %d, want %d", got, want)
	}
	b := make([]byte, 1)
	for i := range frames {
		if err := r.ReadAt(b, int64(i*chunk)); err != nil || b[0] != byte(i+1) {
			t.Fatalf("chunk %d: %v, first byte %d", i, err, b[0])
		}
	}
}
