package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// checkOffsiteURL accepts "" or s3://bucket[/prefix].
func checkOffsiteURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return fmt.Errorf("%q is not an s3://bucket/prefix URL", RedactURL(v))
	}
	return nil
}

// checkOffsiteEndpoint accepts "" or an http(s) URL with a host.
func checkOffsiteEndpoint(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host", RedactURL(v))
	}
	return nil
}

// checkOffsiteInterval accepts a Go duration (10s, 1m) of 1s to 1h, or a
// number of seconds.
func checkOffsiteInterval(v string) error {
	d, err := ParseInterval(v)
	if err != nil {
		return err
	}
	if d < time.Second || d > time.Hour {
		return fmt.Errorf("%s is out of range 1s-1h", d)
	}
	return nil
}

// ParseInterval parses a duration such as "10s", "1m30s" or a plain number
// of seconds.
func ParseInterval(v string) (time.Duration, error) {
	s := strings.TrimSpace(v)
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s {
		return time.Duration(n) * time.Second, nil
	}
	return 0, fmt.Errorf("%q is not a duration (for example 10s or 1m)", v)
}

// checkOptionalInt accepts "" or a whole number in [min, max].
func checkOptionalInt(min, max int) func(string) error {
	c := checkInt(min, max)
	return func(v string) error {
		if strings.TrimSpace(v) == "" {
			return nil
		}
		return c(v)
	}
}

// RedactURL replaces the password of a URL's user information (an access
// key pair written as s3://KEY:SECRET@bucket/…) with "redacted".
func RedactURL(v string) string {
	u, err := url.Parse(v)
	if err != nil || u.User == nil {
		if i := strings.Index(v, "@"); i > 0 && strings.Contains(v[:i], ":") {
			if j := strings.Index(v, "://"); j >= 0 && j < i {
				return v[:j+3] + "redacted@" + v[i+1:]
			}
		}
		return v
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "redacted")
	}
	return u.String()
}
