#!/bin/sh
# Entry point of the pme2go-backup container: a private bus, then the daemon
# in the foreground with its own scheduler (no systemd, no timers here).
# Arguments are passed to pme2go-backupd; a first argument naming a CLI
# command runs the CLI instead (e.g. `restore --latest --target-db app_check`).
set -eu

case "${1:-}" in
full|incremental|list|status|verify|cleanup|test|restore|config|stream|mark|show-changes)
	exec pme2go-backup --direct "$@"
	;;
esac

dbus-daemon --config-file=/etc/pme2go-backup/container-bus.conf --fork --nopidfile
# polkit does not run in the container: the daemon admits uid 0 and members
# of the pme2go-backup group, i.e. whoever runs `pme2go-backup` in here.
exec /usr/libexec/pme2go-backupd --scheduler --polkit=off "$@"
