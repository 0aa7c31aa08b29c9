package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// diskRates measures, on the disk under dir, how many 4 KiB writes per
// second one thread gets into a hole and over already allocated blocks of
// a 1 GiB file. Every replica pays the second figure on each overwrite, so
// it bounds what replicas sharing one disk can do together.
func diskRates(dir string) (hole, overwrite float64, err error) {
	if hole, err = pwriteRate(filepath.Join(dir, "rate-hole"), false); err != nil {
		return 0, 0, err
	}
	overwrite, err = pwriteRate(filepath.Join(dir, "rate-overwrite"), true)
	return hole, overwrite, err
}

func pwriteRate(path string, fill bool) (float64, error) {
	const size = 1 << 30
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return 0, err
	}
	if fill {
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i)
		}
		for off := int64(0); off < size; off += int64(len(chunk)) {
			if _, err := f.WriteAt(chunk, off); err != nil {
				return 0, err
			}
		}
	}
	syscall.Sync()
	block := make([]byte, 4096)
	start, n := time.Now(), 0
	for time.Since(start) < 3*time.Second {
		if _, err := f.WriteAt(block, rand.Int64N(size/4096)*4096); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
