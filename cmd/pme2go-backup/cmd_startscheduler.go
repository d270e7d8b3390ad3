package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/urfave/cli/v2"
)

// startSchedulerCommand keeps the seed's `start-scheduler`: it replaces this
// process with `pme2go-backupd --scheduler`, which runs FULL_BACKUP_SCHEDULE,
// INCREMENTAL_BACKUP_SCHEDULE and CLEANUP_SCHEDULE (hosts and containers
// without systemd timers).
func startSchedulerCommand() *cli.Command {
	return &cli.Command{
		Name:  "start-scheduler",
		Usage: "run the cron schedules in the foreground (pme2go-backupd --scheduler), for hosts without systemd timers",
		Action: func(c *cli.Context) error {
			bin, err := daemonBinary()
			if err != nil {
				return err
			}
			args := []string{bin, "--scheduler"}
			g := commonOf(c)
			if g.ConfigPath != "" {
				args = append(args, "--config", g.ConfigPath)
			}
			args = append(args, "--log-level", g.LogLevel)
			return syscall.Exec(bin, args, os.Environ())
		},
	}
}

// daemonBinary finds pme2go-backupd: beside this program, in
// /usr/libexec or /usr/sbin, or in PATH.
func daemonBinary() (string, error) {
	var candidates []string
	if self, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "pme2go-backupd"))
	}
	candidates = append(candidates, "/usr/libexec/pme2go-backupd", "/usr/sbin/pme2go-backupd")
	for _, p := range candidates {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("pme2go-backupd"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("pme2go-backupd not found beside %s, in /usr/libexec, /usr/sbin or PATH; install it with the package", os.Args[0])
}
