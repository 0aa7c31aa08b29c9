package replication

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/certs"
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

// BenchmarkRebuild measures the full copy of 256 MiB of data from a
// primary to a new Syncing replica, from the layout that adds it to the
// end-of-copy marker's acknowledgement (the replica's data is durable by
// then), over plain TCP and over mutual TLS.
func BenchmarkRebuild(b *testing.B) {
	for _, secure := range []bool{false, true} {
		name := "plain"
		if secure {
			name = "tls"
		}
		b.Run(name, func(b *testing.B) { benchmarkRebuild(b, secure) })
	}
}

func benchmarkRebuild(b *testing.B, secure bool) {
	const size, data = 320 << 20, 256 << 20
	a := startNodeB(b, "a", "127.0.0.1")
	var dialer Dialer
	var bn *testNode
	if secure {
		ca, err := certs.NewCA("rebuild benchmark CA", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		bn = startTLSNode(b, ca, "b", "127.0.0.2")
		dialer = nodeDialer(b, ca, "a", "b")
	} else {
		bn = startNodeB(b, "b", "127.0.0.2")
	}
	ra := a.createB(b, vol, size)
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < data; off += int64(len(chunk)) {
		chunk[0], chunk[len(chunk)-1] = byte(off>>20), byte(off>>24)
		if err := ra.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := ra.Sync(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(data)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		volDir := filepath.Join(bn.dir, vol)
		if err := blockstore.Remove(volDir); err != nil {
			b.Fatal(err)
		}
		bn.createB(b, vol, size)
		l := layoutOf(vol, size, uint64(2*i+1), "a", a.info(InSync), bn.info(Syncing))
		ctl := newTestController(l)
		b.StartTimer()
		p, err := NewPrimary(ra, l, PrimaryOptions{NodeID: "a", Dialer: dialer, Reporter: ctl, AckTimeout: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		select {
		case r := <-ctl.reports:
			if r != "synced:b" {
				b.Fatalf("report %q, want synced:b", r)
			}
		case <-time.After(5 * time.Minute):
			b.Fatal("no copy completed in 5 minutes")
		}
		b.StopTimer()
		p.Close()
		if r, ok := bn.Replica(vol); ok {
			r.Close()
		}
		b.StartTimer()
	}
}
