package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tempMarker separates the base name from the random suffix of temporary
// file names.
const tempMarker = ".tmp-"

// TempPrefix returns the prefix used for temporary files that will later be
// renamed to base: ".<base>.tmp-".
func TempPrefix(base string) string {
	return "." + base + tempMarker
}

// IsTemp reports whether name (a base name, not a path) looks like a
// temporary file created with TempPrefix, i.e. matches ".*.tmp-*".
func IsTemp(name string) bool {
	if strings.Contains(name, "/") {
		return false
	}
	ok, _ := filepath.Match(".*"+tempMarker+"*", name)
	return ok
}

// RemoveLeftovers removes temporary files and directories (see IsTemp)
// located directly in dir, typically left behind by an interrupted run. It
// returns the paths it removed. A missing dir is not an error.
func RemoveLeftovers(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s for leftover temporary files: %w", dir, err)
	}
	var removed []string
	for _, e := range entries {
		if !IsTemp(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return removed, fmt.Errorf("remove leftover temporary file %s: %w; remove it by hand", p, err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}
