package config

// Key describes one configuration key: its name, its default, whether it is
// a secret, and the check applied to a value.
type Key struct {
	Name    string
	Default string
	Secret  bool
	Doc     string
	check   func(v string) error
}

// Keys lists every configuration key the program knows, in the order
// `pme2go-backup config` prints them. The names are the seed's environment
// variables plus the keys added in the same style.
var Keys = []Key{
	{Name: "BACKUP_DIR", Default: "/var/lib/pme2go-backup", Doc: "directory holding full/, incremental/ and state/", check: checkAbsPath},
	{Name: "BACKUP_RETENTION_DAYS", Default: "30", Doc: "days to keep backups (0 keeps everything)", check: checkInt(0, 36500)},
	{Name: "BACKUP_COMPRESSION", Default: "xz", Doc: "archive codec: xz, zstd, gzip or none", check: checkOneOf("xz", "zstd", "gzip", "none")},
	{Name: "BACKUP_COMPRESSION_LEVEL", Default: "6", Doc: "compression level 1-9", check: checkInt(1, 9)},
	{Name: "BACKUP_JOBS", Default: "0", Doc: "parallel pg_dump/pg_restore jobs and compression workers (0: number of cores)", check: checkInt(0, 256)},
	{Name: "BACKUP_LOG_PATHS", Default: "", Doc: "comma-separated log files or directories archived under logs/", check: checkPathList},
	{Name: "BACKUP_EXTRA_PATHS", Default: "", Doc: "comma-separated files or directories archived under files/", check: checkPathList},
	{Name: "FULL_BACKUP_SCHEDULE", Default: "0 2 * * *", Doc: "cron schedule of full backups (built-in scheduler)", check: checkCron},
	{Name: "INCREMENTAL_BACKUP_SCHEDULE", Default: "0 */6 * * *", Doc: "cron schedule of incremental backups", check: checkCron},
	{Name: "CLEANUP_SCHEDULE", Default: "0 3 * * 0", Doc: "cron schedule of cleanup", check: checkCron},
	{Name: "DRILL_SCHEDULE", Default: "0 4 1 * *", Doc: "cron schedule of restore drills (built-in scheduler); empty: none", check: checkOptionalCron},
	{Name: "DB_HOST", Default: "localhost", Doc: "server host name, address or Unix socket directory", check: checkNonEmpty},
	{Name: "DB_PORT", Default: "5432", Doc: "server port", check: checkInt(1, 65535)},
	{Name: "DB_NAME", Default: "postgres", Doc: "database(s) to back up, comma-separated", check: checkNameList},
	{Name: "DB_USER", Default: "postgres", Doc: "role used to connect", check: checkNonEmpty},
	{Name: "DB_PASSWORD", Default: "", Secret: true, Doc: "password (prefer DB_PASSWORD_FILE, a credential or ~/.pgpass)"},
	{Name: "DB_PASSWORD_FILE", Default: "", Doc: "file whose first line is the password", check: checkOptionalAbsPath},
	{Name: "PG_BINDIR", Default: "", Doc: "directory of pg_dump, pg_restore, pg_dumpall, psql (default: matched to the server's major version)", check: checkOptionalAbsPath},
	{Name: "BACKUP_STREAMING", Default: "false", Doc: "capture changes continuously (daemon)", check: checkBool},
	{Name: "MAX_SLOT_LAG", Default: "4GB", Doc: "WAL a slot may retain before its chain is ended", check: checkSize},
	{Name: "REPLICA_IDENTITY_FIX", Default: "", Doc: "set to 'full' to give tables without a key REPLICA IDENTITY FULL (every table, when DB_USER is not a superuser)", check: checkOneOf("", "full")},
	{Name: "BACKUP_ENCRYPTION_RECIPIENTS", Default: "", Doc: "file of age recipients (public keys): when set, every archive and change-set file is encrypted to them", check: checkOptionalAbsPath},
	{Name: "BACKUP_ENCRYPTION_IDENTITY_FILE", Default: "", Doc: "age identity file (private key) that decrypts archives for restore and verify (else the credential backup-encryption-identity)", check: checkOptionalAbsPath},
	{Name: "CAPTURE_DDL", Default: "auto", Doc: "capture DDL through event triggers: auto (when the role is a superuser), true (required) or false", check: checkAutoBool},
	// Off-site repository (engine/offsite; docs/offsite.md).
	{Name: "OFFSITE_URL", Default: "", Doc: "off-site S3 repository, s3://bucket/prefix (empty: no off-site copies)", check: checkOffsiteURL},
	{Name: "OFFSITE_ENDPOINT", Default: "", Doc: "S3 endpoint URL, e.g. https://s3.example.net:9000 (empty: AWS S3)", check: checkOffsiteEndpoint},
	{Name: "OFFSITE_REGION", Default: "", Doc: "S3 region (empty: us-east-1 or the endpoint's default)"},
	{Name: "OFFSITE_CREDENTIALS_FILE", Default: "", Doc: "AWS-style credentials file for the off-site repository", check: checkOptionalAbsPath},
	{Name: "OFFSITE_SYNC_INTERVAL", Default: "10s", Doc: "how often streaming sends the open change set off-site", check: checkOffsiteInterval},
	{Name: "OFFSITE_RETENTION_DAYS", Default: "", Doc: "days to keep backups off-site (empty: BACKUP_RETENTION_DAYS; 0 keeps everything)", check: checkOptionalInt(0, 36500)},
	{Name: "OFFSITE_CHECKSUM", Default: "auto", Doc: "upload checksums: auto, md5, crc32, crc32c, sha256 or none", check: checkOneOf("auto", "md5", "crc32", "crc32c", "sha256", "none")},
	{Name: "LOCAL_RETENTION_DAYS", Default: "", Doc: "days to keep local copies once verified off-site (empty: keep them)", check: checkOptionalInt(0, 36500)},
	// REST API and metrics (daemon/rest).
	{Name: "REST_LISTEN", Default: "", Doc: "REST API listener when not socket-activated: unix:/path or host:port (a TCP one needs REST_TOKEN_FILE)", check: checkListen},
	{Name: "REST_TOKEN_FILE", Default: "", Doc: "file whose first line is the bearer token TCP callers of the REST API send", check: checkOptionalAbsPath},
	// Daemon logs (daemon/logging.go).
	{Name: "LOG_DIR", Default: "", Doc: "directory of the daemon's daily log files (combined, error, admin); empty: standard error or the journal only", check: checkOptionalAbsPath},
	{Name: "METRICS_TEXTFILE", Default: "", Doc: "file the daemon writes its metrics to after each job (node_exporter textfile collector)", check: checkOptionalAbsPath},
}

// lookupKey returns the key definition for name.
func lookupKey(name string) (Key, bool) {
	for _, k := range Keys {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}
