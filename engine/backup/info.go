package backup

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/config"
	"github.com/pme2go/pme2go-backup/engine/pgclient"
	"github.com/pme2go/pme2go-backup/engine/version"
)

// SystemInfo is system_info.json: where and with what the backup was taken.
// It holds no environment variables and no secrets.
type SystemInfo struct {
	Hostname    string               `json:"hostname"`
	OS          string               `json:"os"`
	Kernel      string               `json:"kernel"`
	Arch        string               `json:"arch"`
	CPUs        int                  `json:"cpus"`
	GoVersion   string               `json:"goVersion"`
	ToolVersion string               `json:"toolVersion"`
	Server      *pgclient.ServerInfo `json:"server"`
	Tools       map[string]string    `json:"tools"`
	Taken       time.Time            `json:"taken"`
}

func writeInfo(ctx context.Context, cfg *config.Config, target pgclient.Target, srv *pgclient.ServerInfo, tools map[string]*pgclient.Tool, dbs []string, source func(string) string, staging string, m *archive.Manifest) error {
	host, _ := os.Hostname()
	si := SystemInfo{
		Hostname: host, OS: osName(), Kernel: readTrim("/proc/sys/kernel/osrelease"), Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), ToolVersion: version.Version, Server: srv,
		Tools: map[string]string{}, Taken: time.Now().UTC(),
	}
	for n, t := range tools {
		si.Tools[n] = t.Path + " " + t.Version
	}
	ad := archive.AppData{Databases: map[string]archive.DatabaseStats{}, Configuration: cfg.Sanitized()}
	for _, db := range dbs {
		st, err := databaseStats(ctx, target, source(db))
		if err != nil {
			return err
		}
		ad.Databases[db] = st
	}
	var total int64
	for _, d := range ad.Databases {
		total += d.SizeBytes
	}
	m.Metadata["databaseSize"] = total
	m.Metadata["platform"] = runtime.GOOS
	if err := writeJSON(filepath.Join(staging, "system_info.json"), si); err != nil {
		return err
	}
	m.Files["systemInfo"] = "system_info.json"
	if err := writeJSON(filepath.Join(staging, "application_data.json"), ad); err != nil {
		return err
	}
	m.Files["applicationData"] = "application_data.json"
	return nil
}

func databaseStats(ctx context.Context, target pgclient.Target, db string) (archive.DatabaseStats, error) {
	conn, err := target.Connect(ctx, db)
	if err != nil {
		return archive.DatabaseStats{}, err
	}
	defer conn.Close(context.Background())
	var st archive.DatabaseStats
	if err := conn.QueryRow(ctx, `SELECT pg_database_size(d.oid), pg_encoding_to_char(d.encoding),
	        d.datcollate, d.datctype, pg_get_userbyid(d.datdba)
	   FROM pg_database d WHERE d.datname = current_database()`).Scan(
		&st.SizeBytes, &st.Encoding, &st.Collate, &st.Ctype, &st.Owner); err != nil {
		return st, fmt.Errorf("statistics of %s: %w", db, err)
	}
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, c.relkind::text,
	        pg_total_relation_size(c.oid), greatest(c.reltuples, 0)::bigint
	   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	  WHERE c.relkind IN ('r', 'p', 'm')
	    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
	  ORDER BY 1, 2`)
	if err != nil {
		return st, fmt.Errorf("statistics of %s: %w", db, err)
	}
	st.Tables, err = pgx.CollectRows(rows, pgx.RowToStructByPos[archive.TableStat])
	if err != nil {
		return st, fmt.Errorf("statistics of %s: %w", db, err)
	}
	return st, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func readTrim(path string) string {
	data, _ := os.ReadFile(path)
	return strings.TrimSpace(string(data))
}

func osName() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return runtime.GOOS
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return runtime.GOOS
}
