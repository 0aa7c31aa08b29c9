package chaos

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// cellSize is the unit the checker reasons about: every write covers
// whole cells, and each cell of a write names the write it belongs to.
const cellSize = 256

// cellMagic starts every cell a writer wrote.
var cellMagic = [8]byte{'t', 'r', 'c', 'h', 'a', 'o', 's', '1'}

// Cell values. A write's value is writer<<40 | seq, never zero.
const (
	valueZero    uint64 = 0         // the cell reads as zeroes: never written
	valueGarbage uint64 = 1<<64 - 1 // neither zeroes nor an intact cell
)

// writeValue names the seq-th write of a writer.
func writeValue(writer int, seq uint64) uint64 { return uint64(writer)<<40 | seq }

// describeValue renders a cell value for messages.
func describeValue(v uint64) string {
	switch v {
	case valueZero:
		return "zeroes"
	case valueGarbage:
		return "garbage"
	}
	return fmt.Sprintf("w%d#%d", v>>40, v&(1<<40-1))
}

// fillCell writes the content of cell (its index in the volume) for the
// write value v into p, which is cellSize bytes.
func fillCell(p []byte, v uint64, cell int64) {
	copy(p[0:8], cellMagic[:])
	binary.LittleEndian.PutUint64(p[8:16], v)
	binary.LittleEndian.PutUint64(p[16:24], uint64(cell))
	x := v*0x9E3779B97F4A7C15 ^ uint64(cell)*0xBF58476D1CE4E5B9 | 1
	for i := 28; i < cellSize; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		p[i] = byte(x)
	}
	binary.LittleEndian.PutUint32(p[24:28], crc32.ChecksumIEEE(append(p[0:24:24], p[28:]...)))
}

// decodeCell returns the write value a cell holds: valueZero for zeroes,
// valueGarbage for anything that is not exactly a cell fillCell made for
// this cell index.
func decodeCell(p []byte, cell int64) uint64 {
	if allZero(p) {
		return valueZero
	}
	if [8]byte(p[0:8]) != cellMagic || int64(binary.LittleEndian.Uint64(p[16:24])) != cell {
		return valueGarbage
	}
	v := binary.LittleEndian.Uint64(p[8:16])
	var want [cellSize]byte
	fillCell(want[:], v, cell)
	if [cellSize]byte(p) != want {
		return valueGarbage
	}
	return v
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
