#!/bin/sh
# Entry point of the pme2go-backup container: a private bus, then the daemon
# in the foreground with its own scheduler (no systemd, no timers here):
# FULL_BACKUP_SCHEDULE, INCREMENTAL_BACKUP_SCHEDULE, CLEANUP_SCHEDULE and
# DRILL_SCHEDULE (a monthly restore drill).
#
# Arguments starting with "-" are passed to pme2go-backupd; a first argument
# naming a CLI command runs the CLI in process instead (no daemon needed),
# e.g. `restore --latest --target-db app_check`, `drill`, `list`.
#
# PME2GO_BUS_CONFIG and PME2GO_DAEMON name the bus configuration and the
# daemon (defaults: the image's paths); tests/container runs this script
# directly with its own.
set -eu

bus_config="${PME2GO_BUS_CONFIG:-/etc/pme2go-backup/container-bus.conf}"
daemon="${PME2GO_DAEMON:-/usr/libexec/pme2go-backupd}"

case "${1:-}" in
"" | -*) ;;
*) exec pme2go-backup --direct "$@" ;;
esac

dbus-daemon --config-file="$bus_config" --fork --nopidfile
# polkit does not run in the container: the daemon admits uid 0 and members
# of the pme2go-backup group, i.e. whoever runs `pme2go-backup` in here.
exec "$daemon" --scheduler --polkit=off "$@"
