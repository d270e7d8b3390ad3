package apply

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	want := time.Date(2026, 11, 25, 18, 32, 3, 506302000, time.UTC)
	for _, s := range []string{
		"2026-11-25T18:32:03.506302Z", "2026-11-25 18:32:03.506302+00",
		"2026-11-25 19:32:03.506302+01", "2026-11-25T20:32:03.506302+02:00", "2026-11-25 18:32:03.506302+00:00",
	} {
		got, err := ParseTime(s)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := ParseTime("2026-11-25 18:32:03"); err == nil || !strings.Contains(err.Error(), "time zone") {
		t.Errorf("time without zone: %v", err)
	}
}

func TestParseTarget(t *testing.T) {
	tg, err := ParseTarget(TargetSpec{LSN: "16/B374D848", Exclusive: true})
	if err != nil || tg.Kind != LSN || tg.LSN != 0x16B374D848 || !tg.Exclusive {
		t.Fatalf("LSN target: %+v %v", tg, err)
	}
	if tg, err = ParseTarget(TargetSpec{Xid: "4294967295"}); err != nil || tg.Xid != 4294967295 {
		t.Fatalf("xid target: %+v %v", tg, err)
	}
	if _, err := ParseTarget(TargetSpec{}); err != ErrNoTarget {
		t.Fatalf("no target: %v", err)
	}
	for _, bad := range []TargetSpec{
		{Time: "2026-11-25T18:32:03Z", Latest: true}, {Exclusive: true}, {Latest: true, Exclusive: true},
		{Xid: "-1"}, {LSN: "zz"},
	} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%+v) accepted", bad)
		}
	}
}

func TestCopyEscape(t *testing.T) {
	var b bytes.Buffer
	copyEscape(&b, []byte("a\\b\tc\nd\re\\N"))
	if got, want := b.String(), `a\\b\tc\nd\re\\N`; got != want {
		t.Fatalf("copyEscape = %q, want %q", got, want)
	}
}
