package demo

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// meter shows the progress of a long operation. On a terminal it keeps
// one line, redrawn in place with a carriage return; anywhere else (a
// pipe, a log file, a test) it prints a plain line at most once per
// interval, so that the output stays readable and short.
type meter struct {
	w        io.Writer
	tty      bool
	interval time.Duration
	last     time.Time // when a plain progress line was last printed
	drawn    int       // width of the line on the terminal; 0 when none
}

// plainInterval is how often a meter prints a progress line when its
// output is not a terminal.
const plainInterval = time.Second

func newMeter(w io.Writer) *meter {
	return &meter{w: w, tty: isTerminal(w), interval: plainInterval}
}

// isTerminal says whether w is a terminal, by asking for its settings.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// show draws line as the current progress at time now.
func (m *meter) show(now time.Time, line string) {
	if !m.tty {
		if !m.last.IsZero() && now.Sub(m.last) < m.interval {
			return
		}
		m.last = now
		fmt.Fprintln(m.w, line)
		return
	}
	pad := max(m.drawn-len(line), 0)
	fmt.Fprintf(m.w, "\r%s%s", line, strings.Repeat(" ", pad))
	if pad > 0 {
		fmt.Fprint(m.w, strings.Repeat("\b", pad))
	}
	m.drawn = len(line)
}

// print writes a line that stays, above the progress line: on a terminal
// it first erases the progress line, which the next show redraws.
func (m *meter) print(line string) {
	m.erase()
	fmt.Fprintln(m.w, line)
}

// done ends the progress with a final line, printed in full even when a
// plain line went out a moment ago.
func (m *meter) done(line string) {
	m.print(line)
	m.last = time.Time{}
}

// erase removes the progress line from the terminal.
func (m *meter) erase() {
	if m.drawn > 0 {
		fmt.Fprintf(m.w, "\r%s\r", strings.Repeat(" ", m.drawn))
		m.drawn = 0
	}
}

// bar draws done out of total as a bar width characters wide, followed by
// the percentage: [=========>          ]  47%.
func bar(done, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat(" ", width) + "]    "
	}
	done = min(max(done, 0), total)
	fill := int(done * int64(width) / total)
	b := strings.Repeat("=", fill)
	if fill < width {
		b += ">" + strings.Repeat(" ", width-fill-1)
	}
	return fmt.Sprintf("[%s] %3d%%", b, done*100/total)
}

// rate is bytes per second as MiB/s, or "" before any time has passed.
func rate(bytes int64, d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf("%.0f MiB/s", float64(bytes)/(1<<20)/d.Seconds())
}
