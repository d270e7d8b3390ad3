package config

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/pme2go/pme2go-backup/engine/schedule"
)

func checkNonEmpty(v string) error {
	if strings.TrimSpace(v) == "" {
		return fmt.Errorf("must not be empty")
	}
	return nil
}

func checkAbsPath(v string) error {
	if !filepath.IsAbs(v) {
		return fmt.Errorf("%q is not an absolute path", v)
	}
	return nil
}

func checkOptionalAbsPath(v string) error {
	if v == "" {
		return nil
	}
	return checkAbsPath(v)
}

func checkPathList(v string) error {
	for _, p := range SplitList(v) {
		if err := checkAbsPath(p); err != nil {
			return err
		}
	}
	return nil
}

var dbNameRe = regexp.MustCompile(`^[^\x00,]{1,63}$`)

func checkNameList(v string) error {
	names := SplitList(v)
	if len(names) == 0 {
		return fmt.Errorf("lists no database")
	}
	for _, n := range names {
		if !dbNameRe.MatchString(n) {
			return fmt.Errorf("%q is not a valid database name", n)
		}
	}
	return nil
}

func checkInt(min, max int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		if n < min || n > max {
			return fmt.Errorf("%d is out of range %d-%d", n, min, max)
		}
		return nil
	}
}

func checkOneOf(allowed ...string) func(string) error {
	return func(v string) error {
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

func checkBool(v string) error {
	_, err := ParseBool(v)
	return err
}

func checkCron(v string) error {
	_, err := schedule.Parse(v)
	return err
}

// checkOptionalCron accepts an empty value (nothing scheduled) or a cron
// expression.
func checkOptionalCron(v string) error {
	if v == "" {
		return nil
	}
	return checkCron(v)
}

func checkSize(v string) error {
	_, err := ParseSize(v)
	return err
}

// ParseBool accepts true/false, yes/no, on/off and 1/0.
func ParseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0", "":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true or false)", v)
}

// ParseSize parses a byte size such as "512MB", "4GB", "1TiB" or "1048576".
// Decimal and binary suffixes both count in powers of 1024, as PostgreSQL does.
func ParseSize(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (for example 512MB or 4GB)", v)
	}
	return n * mult, nil
}

// SplitList splits a comma-separated value, trimming blanks and dropping empty items.
func SplitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func checkAutoBool(v string) error {
	if strings.EqualFold(strings.TrimSpace(v), "auto") {
		return nil
	}
	return checkBool(v)
}

// checkListen accepts "", "unix:/absolute/path" or "host:port".
func checkListen(v string) error {
	if v == "" {
		return nil
	}
	if p, ok := strings.CutPrefix(v, "unix:"); ok {
		return checkAbsPath(p)
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is neither unix:/path nor host:port: %w", v, err)
	}
	_ = host
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", v, port)
	}
	return nil
}
