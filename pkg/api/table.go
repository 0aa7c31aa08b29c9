package api

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	apiv1 "github.com/trireme-csi/trireme/pkg/api/v1"
)

// WriteVolumeTable prints a node's volumes for an operator: one row per
// replica a primary replicates to, with its health and copy progress, and
// one row for each volume the node only holds a replica of.
func WriteVolumeTable(w io.Writer, list *apiv1.ListVolumesResponse) error {
	if _, err := fmt.Fprintf(w, "NODE %s  ZONE %s\n", list.GetNodeId(), orDash(list.GetZone())); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VOLUME\tSIZE\tEPOCH\tROLE\tREPLICA\tSTATE\tCONNECTED\tSYNC\tFAULT")
	for _, v := range list.GetVolumes() {
		for _, row := range volumeRows(list.GetNodeId(), v) {
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
	}
	return tw.Flush()
}

func volumeRows(self string, v *apiv1.Volume) [][]string {
	head := []string{v.GetVolumeId(), FormatBytes(v.GetSizeBytes()), fmt.Sprint(v.GetEpoch()), roleName(v.GetRole())}
	if len(v.GetReplicas()) == 0 {
		sync := "-"
		if v.GetRebuilding() {
			sync = "rebuilding"
		}
		return [][]string{append(head, self, stateName(layoutState(v.GetLayout(), self)), "-", sync, "-")}
	}
	rows := make([][]string, 0, len(v.GetReplicas()))
	for _, r := range v.GetReplicas() {
		rows = append(rows, append(head[:4:4], r.GetNodeId(), stateName(r.GetState()),
			yesNo(r.GetConnected()), progress(r.GetSyncedBytes(), r.GetTotalBytes()), orDash(r.GetFault())))
	}
	return rows
}

func layoutState(l *apiv1.Layout, node string) apiv1.ReplicaState {
	for _, r := range l.GetReplicas() {
		if r.GetNodeId() == node {
			return r.GetState()
		}
	}
	return apiv1.ReplicaState_REPLICA_STATE_UNSPECIFIED
}

func roleName(r apiv1.Role) string {
	switch r {
	case apiv1.Role_ROLE_PRIMARY:
		return "primary"
	case apiv1.Role_ROLE_REPLICA:
		return "replica"
	}
	return "-"
}

func stateName(s apiv1.ReplicaState) string {
	if st := StateFromProto(s); st != "" {
		return string(st)
	}
	return "-"
}

func progress(synced, total int64) string {
	if total <= 0 {
		return "-"
	}
	if synced >= total {
		return "100%"
	}
	return fmt.Sprintf("%.1f%% (%s/%s)", 100*float64(synced)/float64(total), FormatBytes(synced), FormatBytes(total))
}

// FormatBytes renders n with a binary unit: 512B, 4KiB, 1.5GiB.
func FormatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0")
	return s + string(units[i]) + "iB"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
