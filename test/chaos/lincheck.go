package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// cellKey names one cell of one volume: a register of the model.
type cellKey struct {
	vol  int
	cell int64
}

// cellInput is one operation on a register.
type cellInput struct {
	write bool
	value uint64 // a write's value
}

// registerModel is a read/write register whose initial content is zeroes.
// A read's output is the value it decoded.
var registerModel = porcupine.Model{
	Init: func() interface{} { return valueZero },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(cellInput)
		if in.write {
			return true, in.value
		}
		return output.(uint64) == state.(uint64), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(cellInput)
		if in.write {
			return "write " + describeValue(in.value)
		}
		return "read " + describeValue(output.(uint64))
	},
	DescribeState: func(state interface{}) string { return describeValue(state.(uint64)) },
}

// verdict is what the checks found in one history.
type verdict struct {
	cells      int // registers checked
	ops        int
	unknown    int // writes with an unknown outcome
	findings   []string
	visualized []string // paths of porcupine visualizations
}

// maxVisualizations bounds the HTML files written for one history.
const maxVisualizations = 5

// checkHistory checks every register's history for linearizability and
// every acknowledged write for survival in the final read (the reads of
// client 0). Visualizations of failing registers go to artifacts.
func checkHistory(ops []op, artifacts func() string, label string) verdict {
	var v verdict
	v.ops = len(ops)
	end := int64(0)
	for _, o := range ops {
		end = max(end, o.ret)
		if o.write && o.unknown {
			v.unknown++
		}
	}
	regs := partition(ops, end+int64(time.Second))
	keys := sortedKeys(regs)
	v.cells = len(keys)
	for _, k := range keys {
		hist := regs[k]
		if porcupine.CheckOperationsTimeout(registerModel, hist, 10*time.Second) == porcupine.Illegal {
			v.findings = append(v.findings, fmt.Sprintf("volume %d cell %d (byte %d): history not linearizable: %s",
				k.vol, k.cell, k.cell*cellSize, summarize(hist)))
			if len(v.visualized) < maxVisualizations && artifacts != nil && artifacts() != "" {
				if p, err := visualize(hist, artifacts(), label, k); err == nil {
					v.visualized = append(v.visualized, p)
				} else {
					v.findings = append(v.findings, "visualize: "+err.Error())
				}
			}
		}
	}
	v.findings = append(v.findings, lostWrites(ops)...)
	return v
}

// partition splits the history into one history per cell. A write whose
// outcome is unknown returns at infinity. A read of a cell that decodes as
// garbage is dropped when a write to that cell ran at the same time (a
// block device does not order them); otherwise the garbage stays in, and
// no linearization can explain it.
func partition(ops []op, infinity int64) map[cellKey][]porcupine.Operation {
	writes := map[cellKey][]op{}
	for _, o := range ops {
		if o.write {
			for i := range o.cells {
				k := cellKey{o.vol, o.firstCell + int64(i)}
				writes[k] = append(writes[k], o)
			}
		}
	}
	regs := map[cellKey][]porcupine.Operation{}
	for _, o := range ops {
		for i := range o.cells {
			k := cellKey{o.vol, o.firstCell + int64(i)}
			po := porcupine.Operation{ClientId: o.client, Call: o.call, Return: o.ret}
			switch {
			case o.write:
				po.Input, po.Output = cellInput{write: true, value: o.value}, uint64(0)
				if o.unknown {
					po.Return = infinity
				}
			case o.got[i] == valueGarbage && overlapsWrite(o, writes[k]):
				continue
			default:
				po.Input, po.Output = cellInput{}, o.got[i]
			}
			regs[k] = append(regs[k], po)
		}
	}
	return regs
}

func overlapsWrite(r op, writes []op) bool {
	for _, w := range writes {
		if w.call <= r.ret && (w.unknown || w.ret >= r.call) {
			return true
		}
	}
	return false
}

// lostWrites compares the final read of each cell (client 0) with the last
// acknowledged write to it. The cell may also hold a write whose outcome
// is unknown and that started before the final read; anything else means
// an acknowledged write was lost.
func lostWrites(ops []op) []string {
	last := map[cellKey]op{}
	unknown := map[cellKey]map[uint64]bool{}
	for _, o := range ops {
		if !o.write {
			continue
		}
		for i := range o.cells {
			k := cellKey{o.vol, o.firstCell + int64(i)}
			switch {
			case o.unknown:
				if unknown[k] == nil {
					unknown[k] = map[uint64]bool{}
				}
				unknown[k][o.value] = true
			case o.ret > last[k].ret:
				last[k] = o
			}
		}
	}
	var out []string
	for _, o := range ops {
		if o.write || o.client != 0 {
			continue
		}
		for i, got := range o.got {
			k := cellKey{o.vol, o.firstCell + int64(i)}
			want, acked := last[k]
			if !acked || got == want.value || unknown[k][got] {
				continue
			}
			out = append(out, fmt.Sprintf("volume %d cell %d (byte %d): ACKNOWLEDGED WRITE LOST: final read %s, last acknowledged write %s (acked at %s)",
				k.vol, k.cell, k.cell*cellSize, describeValue(got), describeValue(want.value), time.Duration(want.ret)))
		}
	}
	return out
}

// summarize lists a register's operations in call order, briefly.
func summarize(hist []porcupine.Operation) string {
	sorted := slices.Clone(hist)
	slices.SortFunc(sorted, func(a, b porcupine.Operation) int { return int(a.Call - b.Call) })
	s := ""
	for i, o := range sorted {
		if i == 12 {
			s += fmt.Sprintf(" ... (%d more)", len(sorted)-i)
			break
		}
		s += fmt.Sprintf(" [c%d %s %.3fs..%s]", o.ClientId, registerModel.DescribeOperation(o.Input, o.Output),
			time.Duration(o.Call).Seconds(), retString(o.Return))
	}
	return s
}

func retString(ret int64) string {
	if ret > int64(24*time.Hour) {
		return "?"
	}
	return fmt.Sprintf("%.3fs", time.Duration(ret).Seconds())
}

// visualize writes porcupine's HTML for one register.
func visualize(hist []porcupine.Operation, dir, label string, k cellKey) (string, error) {
	_, info := porcupine.CheckOperationsVerbose(registerModel, hist, 10*time.Second)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, fmt.Sprintf("%s-vol%d-cell%d.html", label, k.vol, k.cell))
	return p, porcupine.VisualizePath(registerModel, info, p)
}

func sortedKeys(m map[cellKey][]porcupine.Operation) []cellKey {
	keys := make([]cellKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b cellKey) int {
		if a.vol != b.vol {
			return a.vol - b.vol
		}
		return int(a.cell - b.cell)
	})
	return keys
}
