package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/pme2go/pme2go-backup/engine/archive"
	"github.com/pme2go/pme2go-backup/engine/changeset"
)

func showChangesCommand() *cli.Command {
	return &cli.Command{
		Name:      "show-changes",
		Usage:     "print the change set of an incremental archive (or of one segment file) as SQL",
		ArgsUsage: "ARCHIVE|SEGMENT",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError{"show-changes needs one incremental archive or segment file"}
			}
			src := c.Args().First()
			segs := []string{src}
			if _, isArchive := archive.CodecFromName(src); isArchive && !strings.HasSuffix(src, ".changes") {
				tmp, err := os.MkdirTemp("", "pme2go-show-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if _, err := archive.Extract(c.Context, src, tmp); err != nil {
					return fmt.Errorf("extract %s: %w", src, err)
				}
				segs, _ = filepath.Glob(filepath.Join(tmp, "changes", "*"))
				sort.Strings(segs)
				if len(segs) == 0 {
					return fmt.Errorf("%s holds no change set (changes/); is it an incremental archive?", src)
				}
			}
			for _, p := range segs {
				r, err := changeset.Open(p)
				if err != nil {
					return err
				}
				err = changeset.RenderSQL(os.Stdout, r)
				r.Close()
				if err != nil {
					return fmt.Errorf("render %s: %w", filepath.Base(p), err)
				}
			}
			return nil
		},
	}
}
