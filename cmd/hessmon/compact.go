package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/store"
)

func runCompact(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "compact", "rewrite a finished store without its free pages (bbolt's Compact), in place or "+
		"into --out. The copy is read back and compared with the original before it replaces it; a crash "+
		"leaves either the old file or the new one. A store that a trainer is writing is refused: stop the "+
		"trainer first.",
		"hessmon compact --db hessmon.db")
	db := fs.String("db", "hessmon.db", "store to compact")
	out := fs.String("out", "", "write the compacted copy here (must not exist) and leave --db as it is")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *db == "" {
		return usageErr("--db must name a store file")
	}
	if *out != "" {
		if err := store.Compact(*out, *db); err != nil {
			return compactErr(*db, err)
		}
		return printCompacted(e, *out, "wrote "+*out+" from "+*db)
	}
	before, after, err := store.CompactInPlace(*db)
	if err != nil {
		return compactErr(*db, err)
	}
	return printCompacted(e, *db, fmt.Sprintf("compacted %s: %s → %s", *db, mb(before), mb(after)))
}

// compactErr says what to do about a store that a trainer holds; the
// store's own "locked" message points to the live API, which is for reads.
func compactErr(db string, err error) error {
	if errors.Is(err, store.ErrLocked) {
		return fmt.Errorf("%s is locked by another process, most likely a running trainer: compact it after training has finished", db)
	}
	return err
}

func printCompacted(e *env, path, what string) error {
	st, err := store.Open(path, store.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := st.Stats()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s (%s file, %s in use)\n", what, mb(s.FileBytes), mb(s.InUseBytes))
	return nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }
