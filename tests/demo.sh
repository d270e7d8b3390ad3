#!/usr/bin/env bash
# make demo: a throwaway PostgreSQL, sample data, a full backup, list, verify,
# a restore into a new database, and a table-by-table comparison. With
# dbus-daemon installed, the CLI goes through pme2go-backupd running on a
# private bus configured like the system bus (PME2GO_DIRECT=1 runs it all in
# process instead).
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="$PWD/bin/pme2go-backup"

bindir=""
for d in "$(pg_config --bindir 2>/dev/null || true)" $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
	if [ -x "$d/initdb" ]; then bindir="$d"; break; fi
done
[ -n "$bindir" ] || { echo "demo: initdb not found; run make deps" >&2; exit 1; }

work=$(mktemp -d /tmp/pme2go-demo.XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
	chown postgres: "$work"
	as_pg=(runuser -u postgres --)
fi
port=$(( 20000 + RANDOM % 20000 ))
pgdata="$work/data"
daemon_pid=""
bus_pid=""
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
	[ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null || true
	"${as_pg[@]}" "$bindir/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "throwaway PostgreSQL on port $port (wal_level=logical)"
"${as_pg[@]}" "$bindir/initdb" -U postgres -A trust -D "$pgdata" >/dev/null
cat >>"$pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
wal_level = logical
fsync = off
CONF
"${as_pg[@]}" "$bindir/pg_ctl" -D "$pgdata" -l "$work/server.log" -w start >/dev/null
psql() { "$bindir/psql" -X -q -h "$work" -p "$port" -U postgres -v ON_ERROR_STOP=1 "$@"; }

step "sample data in database 'shop'"
psql -d postgres -c "CREATE DATABASE shop"
psql -d shop <<'SQL'
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE customers (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, mood mood, tags text[], profile jsonb);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(12,2), placed timestamptz DEFAULT now(), note text);
CREATE TABLE "Audit Log" (at timestamptz, "what happened" text); -- no primary key
INSERT INTO customers (name, mood, tags, profile)
  SELECT 'customer ' || g, CASE WHEN g % 3 = 0 THEN 'sad'::mood ELSE 'happy' END,
         ARRAY['t' || g % 7, NULL], jsonb_build_object('n', g, 'vip', g % 10 = 0)
  FROM generate_series(1, 2000) g;
INSERT INTO orders (customer, total, note)
  SELECT 1 + g % 2000, (g * 7.31) % 1000, CASE WHEN g % 5 = 0 THEN NULL ELSE repeat('x', g % 50) END
  FROM generate_series(1, 20000) g;
INSERT INTO "Audit Log" VALUES (now(), 'demo loaded'), (now(), 'demo loaded');
SQL
psql -d shop -c "SELECT (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM orders) AS orders"

cat >"$work/pme2go-backup.conf" <<CONF
BACKUP_DIR=$work/backups
DB_HOST=$work
DB_PORT=$port
DB_NAME=shop
DB_USER=postgres
# "Audit Log" has no primary key: let pme2go-backup give it REPLICA IDENTITY FULL
REPLICA_IDENTITY_FIX=full
CONF
export PME2GO_CONF="$work/pme2go-backup.conf"

if [ "${PME2GO_DIRECT:-}" != "1" ] && command -v dbus-daemon >/dev/null 2>&1; then
	step "pme2go-backupd on a private bus configured like the system bus"
	go build -o "$PWD/bin/pme2go-backupd" ./cmd/pme2go-backupd
	# The project's bus policy, plus this user when not root (the policy lets
	# root own the name and call it).
	me=$(id -un)
	cat >"$work/bus.conf" <<BUS
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=$work/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>$PWD/systemd/org.pme2go.Backup1.conf</include>
  <policy user="$me">
    <allow own="org.pme2go.Backup1"/>
    <allow send_destination="org.pme2go.Backup1"/>
  </policy>
</busconfig>
BUS
	dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile 2>"$work/bus.log" &
	bus_pid=$!
	export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/system_bus_socket"
	for _ in $(seq 50); do [ -S "$work/system_bus_socket" ] && break; sleep 0.1; done
	"$PWD/bin/pme2go-backupd" --config "$PME2GO_CONF" 2>"$work/daemon.log" &
	daemon_pid=$!
	for _ in $(seq 100); do
		"$CLI" status >/dev/null 2>&1 && break
		kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
		sleep 0.1
	done
	echo "pme2go-backupd (pid $daemon_pid) owns org.pme2go.Backup1 on $DBUS_SYSTEM_BUS_ADDRESS"
	if command -v busctl >/dev/null 2>&1; then
		busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" introspect org.pme2go.Backup1 /org/pme2go/Backup1 org.pme2go.Backup1.Manager >"$work/introspect"; head -n 12 "$work/introspect"
	fi
else
	export PME2GO_DIRECT=1 # no dbus-daemon here: the CLI works in process
fi
# test, config and show-changes always run in process and read the file; the
# others go to the daemon, which has its own configuration.
cli() {
	echo "\$ pme2go-backup $*"
	case "$1" in
	config | test | show-changes | stream) "$CLI" --config "$PME2GO_CONF" "$@" ;;
	*) if [ "${PME2GO_DIRECT:-}" = "1" ]; then "$CLI" --config "$PME2GO_CONF" "$@"; else "$CLI" "$@"; fi ;;
	esac
}

step "configuration"
cli config
step "self-test"
cli test
step "full backup"
cli full
if [ -n "$daemon_pid" ] && command -v busctl >/dev/null 2>&1; then
	busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" get-property org.pme2go.Backup1 /org/pme2go/Backup1/job/1 org.pme2go.Backup1.Job State Progress Bytes
fi
step "list"
cli list
step "verify"
cli verify
archive=$(ls "$work"/backups/full/*.tar.xz | head -n1)
step "restore into a new database shop_restored"
cli restore --backup "$archive" --target-db shop_restored

step "compare source and restored database, table by table"
sums() {
	psql -d "$1" -At <<'SQL'
SELECT format('%I.%I', n.nspname, c.relname),
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text,
       (xpath('/row/h/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(md5(t::text), '''' ORDER BY md5(t::text)), '''')) AS h FROM %I.%I t', n.nspname, c.relname), false, true, '')))[1]::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   -- our own schema (pme2go_<installation id>) stays in the source only
   AND n.nspname !~ '^pme2go_[0-9a-f]{8}$'
 ORDER BY 1;
SQL
}
same() { # same LABEL FILE_A FILE_B
	if diff -u "$2" "$3"; then
		echo "$1: equal, $(wc -l <"$2") tables with the same rows and checksums"
	else
		echo "$1: MISMATCH" >&2
		exit 1
	fi
}
sums shop >"$work/a"; sums shop_restored >"$work/b"
echo "TABLE|ROWS|CHECKSUM" | cat - "$work/a" | (column -t -s '|' 2>/dev/null || cat)
same "full restore vs source" "$work/a" "$work/b"

step "the application keeps working: new orders, then a mark, then a mistake"
psql -d shop <<'SQL'
INSERT INTO orders (customer, total, note) SELECT 1 + g % 2000, g, 'after the full backup' FROM generate_series(1, 500) g;
UPDATE customers SET profile = profile || '{"upgraded": true}' WHERE id % 10 = 0;
SQL
sums shop >"$work/before_mistake"
cli mark before-cleanup
psql -d shop <<'SQL'
DELETE FROM orders WHERE total < 500;   -- the mistake
UPDATE customers SET mood = 'sad';
SQL
psql -d shop -c "SELECT count(*) AS orders_left FROM orders"
step "incremental backup: the changes since the full backup"
cli incremental
cli list
step "what the change set holds (first lines)"
inc=$(ls "$work"/backups/incremental/*.tar.xz | tail -n1)
cli show-changes "$inc" | head -n 20 || true

step "point-in-time restore to the mark 'before-cleanup'"
cli restore --target-name before-cleanup --target-db shop_before_cleanup
sums shop_before_cleanup >"$work/c"
same "restore to the mark vs the source at the mark" "$work/before_mistake" "$work/c"
psql -d shop_before_cleanup -c "SELECT count(*) AS orders FROM orders"

step "point-in-time restore to the latest captured transaction"
cli restore --latest --target-db shop_latest
sums shop >"$work/d"; sums shop_latest >"$work/e"
same "restore --latest vs the source now" "$work/d" "$work/e"
if [ -n "$daemon_pid" ]; then
	step "the daemon's view: status with its job history"
	cli status >"$work/status"; head -n 10 "$work/status"
fi
