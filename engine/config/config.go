// Package config reads pme2go-backup's configuration: KEY=VALUE lines in
// /etc/pme2go-backup/pme2go-backup.conf, overridden by the environment, with
// the password taken from the safest source available. It is shared by the
// CLI and the daemon.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/crypt"
)

// DefaultPath is the configuration file read when none is named.
const DefaultPath = "/etc/pme2go-backup/pme2go-backup.conf"

// Source tells where a value came from.
type Source struct {
	Kind string // "default", "file", "env", "credential"
	File string
	Line int
}

// String renders the source for `pme2go-backup config`.
func (s Source) String() string {
	switch s.Kind {
	case "file":
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	case "env":
		return "environment"
	case "credential":
		return s.File
	}
	return s.Kind
}

// Config is the effective configuration. Values are validated; Password holds
// the resolved secret and must never be printed or logged.
type Config struct {
	BackupDir        string
	RetentionDays    int
	Compression      string
	CompressionLevel int
	Jobs             int
	LogPaths         []string
	ExtraPaths       []string
	FullSchedule     string
	IncrSchedule     string
	CleanupSchedule  string
	DrillSchedule    string // empty: no restore drills by the built-in scheduler
	DBHost           string
	DBPort           int
	DBNames          []string
	DBUser           string
	Password         string
	PgBinDir         string
	Streaming        bool
	MaxSlotLag       int64
	ReplicaIdentFix  string
	// CaptureDDL is false only with CAPTURE_DDL=false; CaptureDDLMode is
	// "auto" (capture when the role can install the event triggers),
	// "true" (required: a chain is not started without it) or "false".
	CaptureDDL     bool
	CaptureDDLMode string
	// EncryptionRecipients is the age recipients file ("" writes plaintext);
	// EncryptionIdentity the identity file that decrypts ("" none), from
	// BACKUP_ENCRYPTION_IDENTITY_FILE or $CREDENTIALS_DIRECTORY/
	// backup-encryption-identity. Load installs both in engine/crypt.
	EncryptionRecipients string
	EncryptionIdentity   string

	values   map[string]string
	sources  map[string]Source
	Warnings []string
}

// Error is a configuration error; it names the key and, for values read from
// a file, the file and line.
type Error struct {
	Key    string
	Source Source
	Err    error
}

func (e *Error) Error() string {
	where := e.Source.String()
	if e.Key == "" {
		return fmt.Sprintf("configuration %s: %v", where, e.Err)
	}
	return fmt.Sprintf("configuration %s: %s: %v", where, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads the file at path (DefaultPath when empty; a missing default file
// is not an error, a missing named file is) and applies overrides from
// lookupEnv, usually os.LookupEnv.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	c := &Config{values: map[string]string{}, sources: map[string]Source{}}
	for _, k := range Keys {
		c.values[k.Name] = k.Default
		c.sources[k.Name] = Source{Kind: "default"}
	}
	named := path != ""
	if !named {
		path = DefaultPath
	}
	if err := c.readFile(path); err != nil {
		if !(errors.Is(err, os.ErrNotExist) && !named) {
			return nil, err
		}
	}
	for _, k := range Keys {
		if v, ok := lookupEnv(k.Name); ok {
			c.values[k.Name] = v
			c.sources[k.Name] = Source{Kind: "env"}
		}
	}
	for _, k := range Keys {
		if k.check == nil {
			continue
		}
		if err := k.check(c.values[k.Name]); err != nil {
			return nil, &Error{Key: k.Name, Source: c.sources[k.Name], Err: err}
		}
	}
	if err := c.resolvePassword(lookupEnv); err != nil {
		return nil, err
	}
	c.fill()
	c.resolveEncryption(lookupEnv)
	return c, nil
}

func (c *Config) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		src := Source{Kind: "file", File: path, Line: line}
		key, val, ok := strings.Cut(text, "=")
		key = strings.TrimSpace(strings.TrimPrefix(key, "export "))
		if !ok {
			return &Error{Source: src, Err: fmt.Errorf("expected KEY=VALUE, got %q", text)}
		}
		if _, known := lookupKey(key); !known {
			return &Error{Key: key, Source: src, Err: fmt.Errorf("unknown key (see pme2go-backup.conf(5) for the keys)")}
		}
		c.values[key] = unquote(strings.TrimSpace(val))
		c.sources[key] = src
		if key == "DB_PASSWORD" && c.values[key] != "" {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: DB_PASSWORD in the configuration file; prefer DB_PASSWORD_FILE, LoadCredential=db-password or ~/.pgpass", path, line))
		}
		if key == "OFFSITE_URL" && strings.Contains(c.values[key], "@") {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: OFFSITE_URL carries an access key in the configuration file; prefer OFFSITE_CREDENTIALS_FILE, LoadCredential=offsite-credentials or the AWS environment", path, line))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read configuration %s: %w", path, err)
	}
	return nil
}

func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// resolvePassword picks the password: DB_PASSWORD, then DB_PASSWORD_FILE,
// then $CREDENTIALS_DIRECTORY/db-password. With none, libpq's PGPASSFILE or
// ~/.pgpass applies when connecting.
func (c *Config) resolvePassword(lookupEnv func(string) (string, bool)) error {
	if c.values["DB_PASSWORD"] != "" {
		c.Password = c.values["DB_PASSWORD"]
		return nil
	}
	if p := c.values["DB_PASSWORD_FILE"]; p != "" {
		pw, err := readSecret(p)
		if err != nil {
			return &Error{Key: "DB_PASSWORD_FILE", Source: c.sources["DB_PASSWORD_FILE"], Err: err}
		}
		c.Password = pw
		return nil
	}
	if dir, ok := lookupEnv("CREDENTIALS_DIRECTORY"); ok && dir != "" {
		p := filepath.Join(dir, "db-password")
		pw, err := readSecret(p)
		if err == nil {
			c.Password = pw
			c.sources["DB_PASSWORD"] = Source{Kind: "credential", File: p}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return &Error{Key: "DB_PASSWORD", Source: Source{Kind: "credential", File: p}, Err: err}
		}
	}
	return nil
}

// resolveEncryption fills the encryption fields and installs them as the
// process-wide settings of engine/crypt. The identity comes from
// BACKUP_ENCRYPTION_IDENTITY_FILE, else from the systemd credential
// $CREDENTIALS_DIRECTORY/backup-encryption-identity when it exists. The
// files are read only when used (a changed recipients file applies to the
// next archive).
func (c *Config) resolveEncryption(lookupEnv func(string) (string, bool)) {
	s := crypt.Settings{RecipientsFile: c.values["BACKUP_ENCRYPTION_RECIPIENTS"], IdentityFile: c.values["BACKUP_ENCRYPTION_IDENTITY_FILE"]}
	if s.IdentityFile != "" {
		s.IdentitySource = "BACKUP_ENCRYPTION_IDENTITY_FILE " + s.IdentityFile
	} else if dir, ok := lookupEnv("CREDENTIALS_DIRECTORY"); ok && dir != "" {
		p := filepath.Join(dir, crypt.CredentialName)
		// The units' empty default (SetCredential=…:\n) means none.
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "" {
			s.IdentityFile, s.IdentitySource = p, "credential "+p
			c.sources["BACKUP_ENCRYPTION_IDENTITY_FILE"] = Source{Kind: "credential", File: p}
			c.values["BACKUP_ENCRYPTION_IDENTITY_FILE"] = p
		}
	}
	if st, err := os.Stat(s.IdentityFile); s.IdentityFile != "" && err == nil && st.Mode().Perm()&0o077 != 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s is readable by others (mode %v): whoever reads it can decrypt every backup; make it 0600 and owned by the service user (or use LoadCredential=%s)",
			s.IdentitySource, st.Mode().Perm(), crypt.CredentialName))
	}
	c.EncryptionRecipients, c.EncryptionIdentity = s.RecipientsFile, s.IdentityFile
	crypt.Configure(s)
}

func readSecret(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimRight(line, "\r"), nil
}

func (c *Config) fill() {
	v := c.values
	atoi := func(k string) int { n, _ := strconv.Atoi(strings.TrimSpace(v[k])); return n }
	c.BackupDir = filepath.Clean(v["BACKUP_DIR"])
	c.RetentionDays = atoi("BACKUP_RETENTION_DAYS")
	c.Compression = v["BACKUP_COMPRESSION"]
	c.CompressionLevel = atoi("BACKUP_COMPRESSION_LEVEL")
	c.Jobs = atoi("BACKUP_JOBS")
	if c.Jobs == 0 {
		c.Jobs = runtime.NumCPU()
	}
	c.LogPaths = SplitList(v["BACKUP_LOG_PATHS"])
	c.ExtraPaths = SplitList(v["BACKUP_EXTRA_PATHS"])
	c.FullSchedule = v["FULL_BACKUP_SCHEDULE"]
	c.IncrSchedule = v["INCREMENTAL_BACKUP_SCHEDULE"]
	c.CleanupSchedule = v["CLEANUP_SCHEDULE"]
	c.DrillSchedule = v["DRILL_SCHEDULE"]
	c.DBHost = v["DB_HOST"]
	c.DBPort = atoi("DB_PORT")
	c.DBNames = SplitList(v["DB_NAME"])
	c.DBUser = v["DB_USER"]
	c.PgBinDir = v["PG_BINDIR"]
	c.Streaming, _ = ParseBool(v["BACKUP_STREAMING"])
	c.MaxSlotLag, _ = ParseSize(v["MAX_SLOT_LAG"])
	c.ReplicaIdentFix = v["REPLICA_IDENTITY_FIX"]
	c.CaptureDDLMode = "auto"
	if !strings.EqualFold(strings.TrimSpace(v["CAPTURE_DDL"]), "auto") {
		b, _ := ParseBool(v["CAPTURE_DDL"])
		c.CaptureDDLMode = strconv.FormatBool(b)
	}
	c.CaptureDDL = c.CaptureDDLMode != "false"
}

// Entry is one line of the effective configuration.
type Entry struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

// Effective lists every key with its value and source; secrets are shown as
// "(set)" or "(not set)", never in clear.
func (c *Config) Effective() []Entry {
	out := make([]Entry, 0, len(Keys))
	for _, k := range Keys {
		val := c.values[k.Name]
		if k.Secret {
			val = "(not set)"
			if c.Password != "" && k.Name == "DB_PASSWORD" {
				val = "(set, redacted)"
			}
		}
		if k.Name == "OFFSITE_URL" || k.Name == "OFFSITE_ENDPOINT" {
			val = RedactURL(val)
		}
		out = append(out, Entry{Key: k.Name, Value: val, Source: c.sources[k.Name].String()})
	}
	return out
}

// Sanitized returns the effective values keyed by name, secrets redacted, for
// inclusion in archives.
func (c *Config) Sanitized() map[string]string {
	m := map[string]string{}
	for _, e := range c.Effective() {
		m[e.Key] = e.Value
	}
	return m
}

// Value returns the raw effective value of a key (secrets excluded).
func (c *Config) Value(key string) string {
	if k, ok := lookupKey(key); ok && k.Secret {
		return ""
	}
	return c.values[key]
}

// Dirs under BackupDir.

// FullDir is where full backups are stored.
func (c *Config) FullDir() string { return filepath.Join(c.BackupDir, "full") }

// IncrementalDir is where incremental backups are stored.
func (c *Config) IncrementalDir() string { return filepath.Join(c.BackupDir, "incremental") }

// StateDir holds what is not yet an archive: chains, segments, locks.
func (c *Config) StateDir() string { return filepath.Join(c.BackupDir, "state") }
