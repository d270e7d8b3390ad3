package restore

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/pme2go/pme2go-backup/engine/pgclient"
)

// toolKey identifies a client program lookup.
type toolKey struct{ name, binDir string }

// foundTool is a client program found earlier, with the size and time of
// its file then.
type foundTool struct {
	tool  *pgclient.Tool
	size  int64
	mtime time.Time
}

var (
	toolsMu sync.Mutex
	tools   = map[toolKey]foundTool{}
)

// findTool is pgclient.FindTool remembered for the life of the process: a
// restore runs pg_restore up to six times per database, and each lookup
// runs the program with --version. A program whose file changed since
// (an upgrade) is looked up again; a newer major version installed beside
// it is seen after a restart of the process.
func findTool(ctx context.Context, name, binDir string) (*pgclient.Tool, error) {
	k := toolKey{name, binDir}
	toolsMu.Lock()
	f, ok := tools[k]
	toolsMu.Unlock()
	if ok {
		if st, err := os.Stat(f.tool.Path); err == nil && st.Size() == f.size && st.ModTime().Equal(f.mtime) {
			return f.tool, nil
		}
	}
	t, err := pgclient.FindTool(ctx, name, binDir, 0)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(t.Path); err == nil {
		toolsMu.Lock()
		tools[k] = foundTool{tool: t, size: st.Size(), mtime: st.ModTime()}
		toolsMu.Unlock()
	}
	return t, nil
}
