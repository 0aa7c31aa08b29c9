package csi

import (
	"bytes"
	"context"
	"testing"
	"time"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/certs"
	"github.com/trireme-csi/trireme/pkg/frontend/nbdclient"
	"github.com/trireme-csi/trireme/pkg/localcluster"
)

// The primary's node process is killed while a client writes through the
// reconnecting NBD client: the controller fails the volume over to an
// InSync replica in another zone, the client follows it without an error,
// every acknowledged write reads back, and the surviving replicas are
// byte-identical.
func TestPrimaryKilledDuringWritesFailsOver(t *testing.T) {
	lc := startCtrlCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go lc.ctrl.Run(ctx)

	id, l := lc.create(t, "pvc-failover", "zone-a")
	reg := lc.adminRegistry(t)
	admin, err := lc.tls.Bundle(localcluster.AdminPeer)
	if err != nil {
		t.Fatal(err)
	}
	locate := func(ctx context.Context) (string, error) {
		resp, err := reg.LocateVolume(ctx, &apiv1.LocateVolumeRequest{VolumeId: id})
		return resp.GetPrimaryNbdAddress(), err
	}
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	c, err := nbdclient.Dial(dctx, nbdclient.Options{Endpoint: locate, ExportName: id, RetryTimeout: time.Minute,
		TLS: admin.ClientConfig(certs.AllowRoles(certs.RoleNode))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const block = 4096
	const blocks = 256
	written := map[int64][]byte{}
	write := func(i int) {
		t.Helper()
		off := int64(i%blocks) * block
		b := bytes.Repeat([]byte{byte(i)}, block)
		if err := c.WriteAt(ctx, b, off, i%16 == 0); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		written[off] = b
	}
	for i := range 100 {
		write(i)
	}
	killed := time.Now()
	lc.cluster.Node(l.Primary).Kill()
	for i := 100; i < 400; i++ {
		write(i)
	}
	t.Logf("300 writes after the kill done %s after it", time.Since(killed).Round(time.Millisecond))

	v, err := lc.ctrl.GetVolume(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if v.Layout.Primary == l.Primary || v.Layout.Epoch <= l.Epoch {
		t.Fatalf("after the kill the record names primary %s at epoch %d", v.Layout.Primary, v.Layout.Epoch)
	}
	for off, want := range written {
		got := make([]byte, block)
		if err := c.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read at %d after failover: err %v, data differs: %v", off, err, !bytes.Equal(got, want))
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var survivors []string
	for _, r := range v.Layout.Replicas {
		if r.NodeID != l.Primary {
			survivors = append(survivors, r.NodeID)
		}
	}
	sums, err := lc.cluster.Checksums(ctx, id, survivors...)
	if err != nil || sums[survivors[0]] != sums[survivors[1]] {
		t.Fatalf("surviving replicas differ: %v, %v", sums, err)
	}
}
