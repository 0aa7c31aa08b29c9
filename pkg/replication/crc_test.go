package replication

import (
	"bytes"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCRCCombineMatchesTheChecksumOfTheWhole(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	lengths := []int{0, 1, 3, 44, 4095, 4096, 65537, 1 << 20}
	for _, la := range lengths {
		for _, lb := range lengths {
			a, b := make([]byte, la), make([]byte, lb)
			for i := range a {
				a[i] = byte(rng.Uint32())
			}
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			want := crc32.Checksum(append(a[:la:la], b...), crcTable)
			got := crcCombine(crc32.Checksum(a, crcTable), crc32.Checksum(b, crcTable), lb)
			if got != want {
				t.Fatalf("combine of %d and %d bytes: %#x, want %#x", la, lb, got, want)
			}
		}
	}
}

// A copy frame whose payload was checksummed as it was read goes on the
// wire byte for byte as the same frame checksummed whole, and a replica
// accepts it; a wrong precomputed sum is caught by the receiver.
func TestAFramesPrecomputedPayloadSumEncodesTheSameFrame(t *testing.T) {
	data := make([]byte, 3*checksumPiece+512)
	for i := range data {
		data[i] = byte(i*31 + i>>9)
	}
	payload := make([]byte, len(data))
	sum, err := readSummed(func(p []byte, off int64) error {
		copy(p, data[off:])
		return nil
	}, payload, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(payload, data) {
		t.Fatal("readSummed read the wrong bytes")
	}
	plain := Frame{Op: OpWrite, Flags: FlagCopy, ID: 7, Epoch: 9, Offset: 1 << 20, Length: uint32(len(data)), Payload: data}
	summed := plain
	summed.payloadSum, summed.hasPayloadSum = sum, true
	var a, b bytes.Buffer
	plain.WriteTo(&a)
	summed.WriteTo(&b)
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("a frame with a precomputed payload sum encodes differently")
	}
	if _, err := ReadFrame(&b); err != nil {
		t.Fatalf("decoding the frame: %v", err)
	}
	summed.payloadSum++
	var c bytes.Buffer
	summed.WriteTo(&c)
	if _, err := ReadFrame(&c); err == nil {
		t.Fatal("a frame with a wrong payload sum was accepted")
	}
}
