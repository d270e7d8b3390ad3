package pgclient

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ServerInfo is what a backup records about the server it read.
type ServerInfo struct {
	Version          string `json:"version"`    // server_version, e.g. "15.18 (Debian 15.18-0+deb12u1)"
	VersionNum       int    `json:"versionNum"` // server_version_num, e.g. 150018
	SystemIdentifier string `json:"systemIdentifier,omitempty"`
	Timeline         int    `json:"timeline,omitempty"`
	WalLevel         string `json:"walLevel"`
	Superuser        bool   `json:"superuser"`
	Replication      bool   `json:"replication"`
	MaxSlots         int    `json:"maxReplicationSlots"`
	DataChecksums    bool   `json:"dataChecksums"`
}

// Major returns the server's major version (15 for 150018).
func (s *ServerInfo) Major() int { return s.VersionNum / 10000 }

// Inspect reads the server's version, identity and the current role's powers.
// The system identifier and timeline need pg_control_* (superuser or
// pg_monitor-like grants); without them they stay empty.
func Inspect(ctx context.Context, conn *pgx.Conn) (*ServerInfo, error) {
	s := &ServerInfo{}
	var checksums string
	err := conn.QueryRow(ctx, `SELECT current_setting('server_version'),
	        current_setting('server_version_num')::int,
	        current_setting('wal_level'),
	        r.rolsuper, r.rolreplication,
	        current_setting('max_replication_slots')::int,
	        current_setting('data_checksums')
	   FROM pg_roles r WHERE r.rolname = current_user`).Scan(
		&s.Version, &s.VersionNum, &s.WalLevel, &s.Superuser, &s.Replication, &s.MaxSlots, &checksums)
	if err != nil {
		return nil, fmt.Errorf("inspect server: %w", err)
	}
	s.DataChecksums = checksums == "on"
	var sysid int64
	var tli int
	if err := conn.QueryRow(ctx, `SELECT (SELECT system_identifier FROM pg_control_system()),
	        (SELECT timeline_id FROM pg_control_checkpoint())`).Scan(&sysid, &tli); err == nil {
		s.SystemIdentifier = fmt.Sprint(uint64(sysid))
		s.Timeline = tli
	}
	return s, nil
}

// DatabaseSize returns pg_database_size(db) in bytes.
func DatabaseSize(ctx context.Context, conn *pgx.Conn, db string) (int64, error) {
	var n int64
	if err := conn.QueryRow(ctx, `SELECT pg_database_size($1)`, db).Scan(&n); err != nil {
		return 0, fmt.Errorf("size of database %s: %w", db, err)
	}
	return n, nil
}
