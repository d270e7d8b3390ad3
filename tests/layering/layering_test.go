// Package layering checks the import rules of DESIGN.md ("Layout") and
// docs/architecture.md: engine imports nothing of cmd, daemon or dbusapi
// (nor D-Bus, systemd or HTTP code); outside engine only the front door
// (engine/ops) and the config, error, LSN, progress and version types are
// imported; and the workflows stand side by side under the front door: no
// engine package but engine/ops imports a workflow, and the services the
// workflows share import no workflow. `make lint` runs it.
package layering

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/pme2go/pme2go-backup"

// frontDoor lists the engine packages code outside engine may import.
var frontDoor = map[string]bool{
	module + "/engine/ops":      true,
	module + "/engine/config":   true,
	module + "/engine/errs":     true,
	module + "/engine/lsn":      true,
	module + "/engine/progress": true,
	module + "/engine/version":  true,
}

// forbiddenInEngine are import path prefixes engine must never reach.
var forbiddenInEngine = []string{
	module + "/cmd/", module + "/daemon", module + "/dbusapi",
	"github.com/godbus/", "github.com/coreos/go-systemd",
}

// httpInEngine may import net/http directly: the S3 client of the off-site
// repository (DESIGN.md lets engine use an S3 client, which speaks HTTP;
// engine serves no HTTP). Every other engine package must not import it.
var httpInEngine = map[string]bool{module + "/engine/offsite": true}

// workflows are the operations' packages. Only the front door composes them
// (a safety backup is ops calling the full backup for restore; a full
// backup's chain starter comes from incremental through ops): none imports
// another, and nothing else in engine imports one.
var workflows = map[string]bool{
	module + "/engine/backup":      true,
	module + "/engine/incremental": true,
	module + "/engine/restore":     true,
	module + "/engine/drill":       true,
	module + "/engine/offsite":     true,
}

// services are what several workflows use: capture (streaming a chain's
// slot, sealing its segments) and apply (planning and replaying change
// sets). They may be imported by workflows, and import no workflow
// themselves (the rule above says so: they are not engine/ops).
var services = map[string]bool{
	module + "/engine/capture": true,
	module + "/engine/apply":   true,
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	out, err := exec.Command("go", "list", "-json", "-deps=false", module+"/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr) // e.g. an import cycle
		}
		t.Fatalf("go list: %v", err)
	}
	var all []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		all = append(all, p)
	}
	return all
}

// Violations returns one line per broken rule.
func violations(all []pkg) []string {
	var out []string
	for _, p := range all {
		inEngine := strings.HasPrefix(p.ImportPath, module+"/engine/")
		if inEngine {
			// Deps: everything reached, directly or not.
			for _, d := range p.Deps {
				for _, f := range forbiddenInEngine {
					if strings.HasPrefix(d, f) {
						out = append(out, fmt.Sprintf("%s reaches %s (engine must not depend on it)", p.ImportPath, d))
					}
				}
			}
			for _, d := range p.Imports {
				if workflows[d] && p.ImportPath != module+"/engine/ops" {
					kind := "engine package"
					if workflows[p.ImportPath] {
						kind = "workflow"
					} else if services[p.ImportPath] {
						kind = "service"
					}
					out = append(out, fmt.Sprintf("%s imports %s (a %s imports no workflow: compose them in engine/ops, with an interface or function type declared by the consumer)", p.ImportPath, d, kind))
				}
				if strings.HasPrefix(d, "net/http") && !httpInEngine[p.ImportPath] {
					out = append(out, fmt.Sprintf("%s imports %s (engine speaks no HTTP except through the S3 client)", p.ImportPath, d))
				}
			}
			continue
		}
		if strings.HasPrefix(p.ImportPath, module+"/tests/") {
			continue // tests cross packages by design
		}
		for _, d := range p.Imports {
			if strings.HasPrefix(d, module+"/engine/") && !frontDoor[d] {
				out = append(out, fmt.Sprintf("%s imports %s (outside engine use engine/ops and its types only)", p.ImportPath, d))
			}
		}
	}
	return out
}

func TestLayering(t *testing.T) {
	for _, v := range violations(listPackages(t)) {
		t.Error(v)
	}
}

// TestCheckCatchesViolations proves the check can fail.
func TestCheckCatchesViolations(t *testing.T) {
	bad := []pkg{
		{ImportPath: module + "/engine/backup", Deps: []string{module + "/daemon/jobs"}},
		{ImportPath: module + "/cmd/pme2go-backup", Imports: []string{module + "/engine/restore"}},
		{ImportPath: module + "/cmd/pme2go-backup", Imports: []string{module + "/engine/ops"}},
		// The workflow tower: each of these is one violation.
		{ImportPath: module + "/engine/restore", Imports: []string{module + "/engine/backup", module + "/engine/apply"}},
		{ImportPath: module + "/engine/capture", Imports: []string{module + "/engine/incremental"}},
		{ImportPath: module + "/engine/catalog", Imports: []string{module + "/engine/offsite"}},
		// Allowed: the front door composes workflows; workflows use services.
		{ImportPath: module + "/engine/ops", Imports: []string{module + "/engine/backup", module + "/engine/restore", module + "/engine/drill"}},
		{ImportPath: module + "/engine/drill", Imports: []string{module + "/engine/apply"}},
		{ImportPath: module + "/engine/incremental", Imports: []string{module + "/engine/capture"}},
	}
	if v := violations(bad); len(v) != 5 {
		t.Fatalf("violations = %q, want 5", v)
	}
}
