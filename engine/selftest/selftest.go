// Package selftest implements `pme2go-backup test`: the seed's self-test of
// everything a backup needs, each finding with its fix.
package selftest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/chain"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/fsutil"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// Status of one check.
type Status string

// Check outcomes.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Finding is the result of one check.
type Finding struct {
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// MinFreeBytes is the free space below which BACKUP_DIR draws a warning.
const MinFreeBytes = 1 << 30

// Run performs every check and returns the findings; it never stops at the
// first failure, so the operator sees everything to fix at once.
func Run(ctx context.Context, cfg *config.Config) []Finding {
	var out []Finding
	add := func(check string, st Status, msg, fix string) {
		out = append(out, Finding{Check: check, Status: st, Message: msg, Fix: fix})
	}
	for _, w := range cfg.Warnings {
		add("configuration", Warn, w, "move the password to DB_PASSWORD_FILE or a systemd credential")
	}
	checkBackupDir(cfg, add)
	checkEncryption(add)

	target := pgclient.FromConfig(cfg)
	var srv *pgclient.ServerInfo
	for i, db := range cfg.DBNames {
		conn, err := target.Connect(ctx, db)
		if err != nil {
			add("connection "+db, Fail, err.Error(), "check DB_HOST, DB_PORT, DB_USER, DB_NAME and the password source")
			continue
		}
		add("connection "+db, OK, fmt.Sprintf("connected to %s as %s", db, cfg.DBUser), "")
		if i == 0 {
			srv, err = pgclient.Inspect(ctx, conn)
			if err != nil {
				add("server", Fail, err.Error(), "")
			}
		}
		checkPrivileges(ctx, conn, db, add)
		if can, _, mode, err := chain.CaptureModeFor(ctx, conn, cfg); err != nil {
			add("ddl capture "+db, Fail, err.Error(), "set CAPTURE_DDL=auto or false, or use a superuser DB_USER")
		} else if !can && cfg.ReplicaIdentFix != "full" {
			// Without event triggers a chain starts only with every table
			// REPLICA IDENTITY FULL (chain.NoTriggersError).
			add("ddl capture "+db, Warn, mode+"; without event triggers full backups start no chain (incremental backups off) unless REPLICA_IDENTITY_FIX=full",
				"set REPLICA_IDENTITY_FIX=full (every table gets REPLICA IDENTITY FULL, so that a table losing its key breaks no write), or use a superuser DB_USER")
		} else {
			add("ddl capture "+db, OK, mode, "")
		}
		conn.Close(context.Background())
	}
	if srv == nil {
		return out
	}
	add("server", OK, "PostgreSQL "+srv.Version, "")
	checkServer(srv, cfg, add)
	for _, name := range []string{"pg_dump", "pg_dumpall", "pg_restore", "psql"} {
		tool, err := pgclient.FindTool(ctx, name, cfg.PgBinDir, srv.Major())
		if err != nil {
			add(name, Fail, err.Error(), fmt.Sprintf("apt-get install postgresql-client-%d, or set PG_BINDIR", srv.Major()))
			continue
		}
		if err := tool.CheckCompatible(srv.Major()); err != nil {
			add(name, Fail, err.Error(), fmt.Sprintf("apt-get install postgresql-client-%d, or set PG_BINDIR", srv.Major()))
			continue
		}
		add(name, OK, fmt.Sprintf("%s %s", tool.Path, tool.Version), "")
	}
	return out
}

func checkBackupDir(cfg *config.Config, add func(string, Status, string, string)) {
	if err := fsutil.EnsurePrivateDir(cfg.BackupDir); err != nil {
		add("backup directory", Fail, fmt.Sprintf("%s is not usable: %v", cfg.BackupDir, err), "create it owned by the service user with mode 0700, or change BACKUP_DIR")
		return
	}
	probe := filepath.Join(cfg.BackupDir, fsutil.TempPrefix("selftest")+"probe")
	if err := os.WriteFile(probe, []byte("ok"), 0o600); err != nil {
		add("backup directory", Fail, fmt.Sprintf("%s is not writable: %v", cfg.BackupDir, err), "give the service user write access, or change BACKUP_DIR")
		return
	}
	os.Remove(probe)
	var st syscall.Statfs_t
	if err := syscall.Statfs(cfg.BackupDir, &st); err == nil {
		free := int64(st.Bavail) * st.Bsize
		if free < MinFreeBytes {
			add("free space", Warn, fmt.Sprintf("%s has only %d MiB free", cfg.BackupDir, free>>20), "free space, lower BACKUP_RETENTION_DAYS or move BACKUP_DIR")
		} else {
			add("free space", OK, fmt.Sprintf("%d GiB free in %s", free>>30, cfg.BackupDir), "")
		}
	}
	add("backup directory", OK, cfg.BackupDir+" is writable", "")
}

func checkServer(srv *pgclient.ServerInfo, cfg *config.Config, add func(string, Status, string, string)) {
	if srv.WalLevel != "logical" {
		add("wal_level", Warn, fmt.Sprintf("wal_level is %s: full backups work, incremental backups are off", srv.WalLevel),
			"ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL")
	} else {
		add("wal_level", OK, "wal_level is logical: incremental backups possible", "")
	}
	if !srv.Superuser {
		add("superuser", Warn, cfg.DBUser+" is not a superuser: globals are saved without role passwords", "run backups as a superuser to include role passwords")
	}
	if !srv.Superuser && !srv.Replication {
		add("replication", Warn, cfg.DBUser+" lacks the REPLICATION attribute: incremental backups are off", "ALTER ROLE "+cfg.DBUser+" REPLICATION")
	}
}

func checkPrivileges(ctx context.Context, conn *pgx.Conn, db string, add func(string, Status, string, string)) {
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE c.relkind IN ('r', 'p', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
	   AND NOT has_table_privilege(c.oid, 'SELECT') LIMIT 5`)
	if err != nil {
		add("privileges "+db, Fail, err.Error(), "")
		return
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		add("privileges "+db, Fail, err.Error(), "")
		return
	}
	if len(names) > 0 {
		add("privileges "+db, Fail, fmt.Sprintf("cannot read %v", names), "GRANT pg_read_all_data TO the backup role, or run as a superuser")
		return
	}
	add("privileges "+db, OK, "every table is readable", "")
}

// Failed reports whether any finding is a failure.
func Failed(fs []Finding) bool {
	for _, f := range fs {
		if f.Status == Fail {
			return true
		}
	}
	return false
}
