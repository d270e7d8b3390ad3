package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/pme2go/pme2go-backup/engine/config"
)

// loadConfig reads the configuration named by --config (or the default) with
// the environment's overrides and logs its warnings.
func loadConfig(c *cli.Context) (*config.Config, *slog.Logger, error) {
	log := newLogger(c.String("log-level"))
	cfg, err := config.Load(c.String("config"), os.LookupEnv)
	if err != nil {
		return nil, log, err
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	return cfg, log, nil
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// humanBytes renders n as B, KiB, MiB, GiB or TiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}

// progressPrinter shows a progress bar on a terminal and plain lines (one per
// phase and per tenth) otherwise.
type progressPrinter struct {
	w        *os.File
	tty      bool
	phase    string
	lastTick int64
}

func newProgress(w *os.File) *progressPrinter { return &progressPrinter{w: w, tty: isTerminal(w)} }

func (p *progressPrinter) update(phase, what string, done, total int64) {
	frac := 0.0
	if total > 0 {
		frac = float64(done) / float64(total)
		if frac > 1 {
			frac = 1
		}
	}
	if p.tty {
		bar := strings.Repeat("#", int(frac*30)) + strings.Repeat(".", 30-int(frac*30))
		fmt.Fprintf(p.w, "\r\033[K[%s] %3.0f%% %s %s %s/%s", bar, frac*100, phase, what, humanBytes(done), humanBytes(total))
		return
	}
	tick := int64(frac * 10)
	if phase != p.phase || tick != p.lastTick {
		fmt.Fprintf(p.w, "%s %s: %.0f%% (%s of %s)\n", phase, what, frac*100, humanBytes(done), humanBytes(total))
	}
	p.phase, p.lastTick = phase, tick
}

func (p *progressPrinter) finish() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
