package replication

import "hash/crc32"

// castagnoli is the CRC-32C polynomial in the bit-reversed form that
// hash/crc32 works in: bit 31 is the coefficient of x^0.
const castagnoli = 0x82f63b78

// crcCombine returns the CRC-32C of a||b from the CRC-32C of a, the
// CRC-32C of b and the length of b. A frame's checksum covers its header
// and then its payload; this lets the primary checksum copy data right
// after reading it, while it is still in the processor's cache, and
// finish the frame's checksum once the header is known.
//
// Appending len(b) bytes to a multiplies a's remainder by x^(8·len(b))
// modulo the polynomial, and the CRC is linear in the message, so the
// checksum of the whole is that product plus b's own checksum. The
// initial and final inversions of the CRC cancel out of the sum.
func crcCombine(a, b uint32, lenB int) uint32 {
	return gfMul(xPow(8*uint64(lenB)), a) ^ b
}

// gfMul multiplies two polynomials modulo the CRC-32C polynomial, both in
// bit-reversed form.
func gfMul(a, b uint32) uint32 {
	var p uint32
	for bit := uint32(1) << 31; bit != 0; bit >>= 1 {
		if a&bit != 0 {
			p ^= b
		}
		// b *= x: a shift towards bit 0, reduced when x^31 overflows.
		if b&1 != 0 {
			b = b>>1 ^ castagnoli
		} else {
			b >>= 1
		}
	}
	return p
}

// xPow returns x^n modulo the CRC-32C polynomial, in bit-reversed form.
func xPow(n uint64) uint32 {
	result := uint32(1) << 31 // x^0
	square := uint32(1) << 30 // x^1
	for ; n != 0; n >>= 1 {
		if n&1 != 0 {
			result = gfMul(result, square)
		}
		square = gfMul(square, square)
	}
	return result
}

// checksumPiece is how much of a copy chunk is read before it is added to
// the chunk's checksum: small enough to still be in the cache.
const checksumPiece = 128 << 10

// readSummed fills buf from read at off, piece by piece, and returns the
// CRC-32C of buf, computed while each piece is still in the cache.
func readSummed(read func([]byte, int64) error, buf []byte, off int64) (uint32, error) {
	var sum uint32
	for done := 0; done < len(buf); {
		piece := buf[done:min(len(buf), done+checksumPiece)]
		if err := read(piece, off+int64(done)); err != nil {
			return 0, err
		}
		sum = crc32.Update(sum, crcTable, piece)
		done += len(piece)
	}
	return sum, nil
}
