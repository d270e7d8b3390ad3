package config

import (
	"os"
	"strings"
	"testing"
)

// TestEveryKeyDocumented keeps pme2go-backup.conf(5) in step with Keys.
func TestEveryKeyDocumented(t *testing.T) {
	page, err := os.ReadFile("../../man/pme2go-backup.conf.5")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys {
		if !strings.Contains(string(page), ".B "+k.Name+"\n") {
			t.Errorf("%s is not documented in man/pme2go-backup.conf.5", k.Name)
		}
	}
}
