package bench

import "os"

// These tests run the CLI without the daemon: as with --direct, it works in
// process (the daemon's own tests are in tests/daemon).
func init() { os.Setenv("PME2GO_DIRECT", "1") }
