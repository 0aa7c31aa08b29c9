package demo

import (
	"strings"
	"testing"
	"time"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

const (
	inSync  = apiv1.ReplicaState_REPLICA_STATE_IN_SYNC
	syncing = apiv1.ReplicaState_REPLICA_STATE_SYNCING
	faulted = apiv1.ReplicaState_REPLICA_STATE_FAULTED
)

func layout(epoch uint64, primary string, replicas ...*apiv1.ReplicaInfo) *apiv1.Layout {
	return &apiv1.Layout{VolumeId: "vol-1", Epoch: epoch, Primary: primary, Replicas: replicas}
}

// rep is a replica on node "node-<z><n>" in "zone-<z>".
func rep(node string, state apiv1.ReplicaState) *apiv1.ReplicaInfo {
	return &apiv1.ReplicaInfo{NodeId: node, Zone: "zone-" + node[5:6], State: state}
}

func zoneOfNode(id string) string { return "zone-" + id[5:6] }

func TestDescribeChangeNamesEveryChangeInOneLine(t *testing.T) {
	start := layout(2, "node-b1", rep("node-b1", inSync), rep("node-a1", inSync), rep("node-c1", inSync))
	tests := []struct {
		name     string
		old, cur *apiv1.Layout
		want     string
	}{
		{"failover", start,
			layout(3, "node-a1", rep("node-a1", inSync), rep("node-c1", inSync), rep("node-b1", faulted)),
			"epoch 2 -> 3: primary node-b1 (zone-b) -> node-a1 (zone-a); node-b1 in sync -> faulted"},
		{"replacement",
			layout(3, "node-a1", rep("node-a1", inSync), rep("node-c1", inSync), rep("node-b1", faulted)),
			layout(4, "node-a1", rep("node-a1", inSync), rep("node-c1", inSync), rep("node-c2", syncing)),
			"epoch 3 -> 4: replacement replica on node-c2 (zone-c), syncing; node-b1 removed"},
		{"in sync",
			layout(4, "node-a1", rep("node-a1", inSync), rep("node-c2", syncing)),
			layout(5, "node-a1", rep("node-a1", inSync), rep("node-c2", inSync)),
			"epoch 4 -> 5: node-c2 syncing -> in sync"},
		{"epoch only", start, layout(3, "node-b1", rep("node-b1", inSync), rep("node-a1", inSync), rep("node-c1", inSync)),
			"epoch 2 -> 3: no change in placement"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describeChange(tt.old, tt.cur, zoneOfNode); got != tt.want {
				t.Errorf("describeChange =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}

func TestCheckSpreadEnforcesI6(t *testing.T) {
	tests := []struct {
		name    string
		l       *apiv1.Layout
		live    []string
		wantErr string
	}{
		{"three zones", layout(1, "node-a1", rep("node-a1", inSync), rep("node-b1", inSync), rep("node-c1", inSync)),
			[]string{"zone-a", "zone-b", "zone-c"}, ""},
		{"two zones left: a zone may hold two", layout(5, "node-a1", rep("node-a1", inSync), rep("node-c1", inSync), rep("node-c2", inSync)),
			[]string{"zone-a", "zone-c"}, ""},
		{"two in a zone while another has none", layout(5, "node-a1", rep("node-a1", inSync), rep("node-a2", inSync), rep("node-c1", inSync)),
			[]string{"zone-a", "zone-b", "zone-c"}, "2 replicas in zone-a while zone-b holds none"},
		{"two on one node", layout(5, "node-a1", rep("node-a1", inSync), rep("node-a1", inSync)),
			[]string{"zone-a"}, "two replicas on node-a1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkSpread(tt.l, tt.live)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("checkSpread = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("checkSpread = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestOffsetIsSignedToTheHundredth(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "+0.00s", -time.Millisecond: "+0.00s", -20 * time.Millisecond: "-0.02s",
		2314 * time.Millisecond: "+2.31s", 2316 * time.Millisecond: "+2.32s",
	} {
		if got := offset(d); got != want {
			t.Errorf("offset(%v) = %q, want %q", d, got, want)
		}
	}
}
