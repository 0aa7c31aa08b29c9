package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
	"github.com/trireme-csi/trireme/pkg/blockstore"
	"github.com/trireme-csi/trireme/pkg/localcluster"
	"github.com/trireme-csi/trireme/pkg/replication"
)

// rebuildRuns is how many full copies the rebuild figure takes.
const rebuildRuns = 5

// spareNode takes the replacement replicas of the rebuild figure, in the
// zone of node-c.
var spareNode = localcluster.NodeSpec{ID: "node-d", Zone: "zone-c", IP: "127.0.0.4"}

// rebuildResult is one full copy to a new replica, and the disk's direct
// sequential write speed measured just before it.
type rebuildResult struct {
	bytes    int64
	duration time.Duration
	diskBps  float64
}

func (r rebuildResult) bps() float64 { return float64(r.bytes) / r.duration.Seconds() }

// measureRebuild copies the filled 3-replica volume to a new, empty
// replica, run after run, alternating between node-c and node-d as the
// replaced node: the primary's compare resync finds every chunk of the
// new replica a hole and copies all the data. The duration is the
// primary's, from the start of the copy to the replica's acknowledgement
// of the end-of-copy marker, by which time the copy is durable.
func measureRebuild(ctx context.Context, cfg config, cluster *localcluster.Cluster, l replication.Layout) ([]rebuildResult, error) {
	primary := cluster.Node(l.Primary)
	var out []rebuildResult
	for i := range rebuildRuns {
		from, to := "node-c", spareNode.ID
		if i%2 == 1 {
			from, to = to, from
		}
		// The fill's writeback, and the last run's, are not this copy's.
		syscall.Sync()
		disk, err := directWriteSpeed(cfg.dir, cfg.size)
		if err != nil {
			return nil, err
		}
		if _, err := cluster.Node(to).Client.CreateReplica(ctx, &apiv1.CreateReplicaRequest{VolumeId: l.VolumeID, SizeBytes: l.Size}); err != nil {
			return nil, fmt.Errorf("create replica on %s: %w", to, err)
		}
		next := l
		next.Epoch++
		next.Replicas = nil
		for _, r := range l.Replicas {
			if r.NodeID != from {
				next.Replicas = append(next.Replicas, r)
			}
		}
		n := cluster.Node(to)
		next.Replicas = append(next.Replicas, replication.ReplicaInfo{NodeID: to, Zone: n.Zone, Address: n.ReplicationAddr, State: replication.Syncing})
		mark := fileSize(primary.LogPath())
		if err := cluster.SetLayout(ctx, next); err != nil {
			return nil, err
		}
		bytes, d, err := waitCopy(ctx, primary.LogPath(), mark, to)
		if err != nil {
			return nil, err
		}
		fmt.Printf("rebuild %d: %s replaced by %s: %d MiB in %s = %.0f MiB/s; disk %.0f MiB/s\n",
			i, from, to, bytes>>20, d, float64(bytes)/d.Seconds()/(1<<20), disk/(1<<20))
		out = append(out, rebuildResult{bytes: bytes, duration: d, diskBps: disk})
		// The new replica counts from now on; the replaced one goes.
		for j := range next.Replicas {
			next.Replicas[j].State = replication.InSync
		}
		next.Epoch++
		if err := cluster.SetLayout(ctx, next); err != nil {
			return nil, err
		}
		if _, err := cluster.Node(from).Client.DeleteReplica(ctx, &apiv1.DeleteReplicaRequest{VolumeId: l.VolumeID}); err != nil {
			return nil, fmt.Errorf("delete replica on %s: %w", from, err)
		}
		l = next
	}
	return out, nil
}

// copyLine is the primary's log line for a finished copy.
var copyLine = regexp.MustCompile(`"Replica copy complete.*replica="([^"]+)".*copied=(\d+) duration="?([0-9.a-zµ]+)"?`)

// waitCopy waits for the primary's log, past mark, to report a finished
// copy to node.
func waitCopy(ctx context.Context, logPath string, mark int64, node string) (int64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		b, err := os.ReadFile(logPath)
		if err != nil {
			return 0, 0, err
		}
		if int64(len(b)) > mark {
			for _, m := range copyLine.FindAllSubmatch(b[mark:], -1) {
				if string(m[1]) != node {
					continue
				}
				n, _ := strconv.ParseInt(string(m[2]), 10, 64)
				d, err := time.ParseDuration(string(m[3]))
				if err != nil {
					return 0, 0, fmt.Errorf("copy line duration %q: %w", m[3], err)
				}
				return n, d, nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("no copy to %s logged in %s: %w", node, logPath, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// directWriteSpeed writes n bytes sequentially, 1 MiB at a time, with
// O_DIRECT into a new file under dir, as `dd oflag=direct bs=1M` would,
// and returns bytes per second, the final fdatasync included.
func directWriteSpeed(dir string, n int64) (float64, error) {
	path := filepath.Join(dir, "seqwrite")
	defer os.Remove(path)
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_DIRECT, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open %s with O_DIRECT: %w", path, err)
	}
	defer unix.Close(fd)
	buf := blockstore.AlignedBuffer(1 << 20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	for off := int64(0); off < n; off += int64(len(buf)) {
		if _, err := unix.Pwrite(fd, buf, off); err != nil {
			return 0, fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := unix.Fdatasync(fd); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// medianOf returns the median of xs.
func medianOf(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
