package replication

import (
	"context"
	"sync/atomic"
	"testing"
)

// BenchmarkReplicatedWrite4K measures 4 KiB writes at queue depth 32 on a
// primary with two InSync replicas on loopback.
func BenchmarkReplicatedWrite4K(b *testing.B) {
	a := startNodeB(b, "a", "127.0.0.1")
	bn := startNodeB(b, "b", "127.0.0.2")
	c := startNodeB(b, "c", "127.0.0.3")
	const size = 256 << 20
	ra := a.createB(b, vol, size)
	bn.createB(b, vol, size)
	c.createB(b, vol, size)
	l := layoutOf(vol, size, 1, "a", a.info(InSync), bn.info(InSync), c.info(InSync))
	p, err := NewPrimary(ra, l, PrimaryOptions{NodeID: "a"})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	buf := make([]byte, 4096)
	var next atomic.Int64
	b.SetBytes(4096)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			off := (next.Add(7919) % (size / 4096)) * 4096
			if err := p.WriteAt(context.Background(), buf, off, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
