package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/ops"
	"github.com/pme2go/pme2go-backup/engine/progress"
)

// progressPrinter shows a progress bar on a terminal and plain lines (one
// per phase and per tenth) otherwise.
type progressPrinter struct {
	w        io.Writer
	tty      bool
	phase    string
	lastTick int64
}

func newProgress(w io.Writer) *progressPrinter { return &progressPrinter{w: w, tty: isTerminal(w)} }

// report is an ops.Progress.
func (p *progressPrinter) report(e ops.ProgressEvent) {
	if e.Phase == "done" {
		p.finish()
		return
	}
	frac, known := e.Fraction()
	amount := fmt.Sprintf("%d of %d %s", e.Done, e.Total, e.Unit)
	if e.Unit == progress.Bytes {
		amount = humanBytes(e.Done) + " of " + humanBytes(e.Total)
	}
	what := strings.TrimSpace(e.Object + " " + e.Message)
	if p.tty {
		if !known {
			fmt.Fprintf(p.w, "\r\033[K%s %s", e.Phase, what)
			return
		}
		bar := strings.Repeat("#", int(frac*30)) + strings.Repeat(".", 30-int(frac*30))
		fmt.Fprintf(p.w, "\r\033[K[%s] %3.0f%% %s %s %s", bar, frac*100, e.Phase, e.Object, amount)
		return
	}
	tick := int64(frac * 10)
	if key := e.Phase + "\x00" + e.Object; key != p.phase || tick != p.lastTick {
		p.phase, p.lastTick = key, tick
	} else {
		return
	}
	if known {
		fmt.Fprintf(p.w, "%s %s: %.0f%% (%s)\n", e.Phase, e.Object, frac*100, amount)
	} else {
		fmt.Fprintf(p.w, "%s\n", strings.TrimSpace(e.Phase+" "+what))
	}
}

func (p *progressPrinter) finish() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
