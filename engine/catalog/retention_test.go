package catalog

import (
	"testing"
	"time"

	"github.com/pme2go/pme2go-backup/engine/archive"
)

func TestPlanKeepsNewestFullAndChainDependencies(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	b := func(name, typ, chain string, age time.Duration) Backup {
		return Backup{Name: name, Path: "/b/" + name, Type: archive.Kind(typ), ChainID: chain, Timestamp: now.Add(-age)}
	}
	all := []Backup{
		b("f1", "full", "c1", 40*day),
		b("i1", "incremental", "c1", 39*day),
		b("f2", "full", "c2", 35*day),
		b("i2a", "incremental", "c2", 34*day),
		b("i2b", "incremental", "c2", 2*day), // recent: keeps f2 and i2a
		b("f3", "full", "", 50*day),
	}
	got := map[string]bool{}
	for _, d := range Plan(all, 30, now) {
		got[d.Backup.Name] = d.Keep
	}
	want := map[string]bool{"f1": false, "i1": false, "f2": true, "i2a": true, "i2b": true, "f3": false}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: keep=%v, want %v", k, got[k], v)
		}
	}
	// Everything old: the newest full backup survives.
	old := []Backup{b("a", "full", "", 90*day), b("z", "full", "", 60*day)}
	for _, d := range Plan(old, 30, now) {
		if d.Keep != (d.Backup.Name == "z") {
			t.Errorf("%s: keep=%v (%s)", d.Backup.Name, d.Keep, d.Reason)
		}
	}
	// Retention 0 keeps everything.
	for _, d := range Plan(all, 0, now) {
		if !d.Keep {
			t.Errorf("retention 0 removed %s", d.Backup.Name)
		}
	}
}
