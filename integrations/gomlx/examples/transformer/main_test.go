package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	hgomlx "github.com/hessmon/hessmon/integrations/gomlx"
	"github.com/hessmon/hessmon/store"
)

// TestRunWritesStore trains a tiny transformer for a few steps and reads
// the store back as `hessmon show` does.
// TestMain opts into the fast matmul VJPs as main does.
func TestMain(m *testing.M) {
	hgomlx.UseFastVJPs()
	os.Exit(m.Run())
}

func TestRunWritesStore(t *testing.T) {
	db := filepath.Join(t.TempDir(), "t.db")
	c := config{FullEvery: 1, Steps: 12, Every: 6, Layers: 1, Dim: 8, Heads: 2, SeqLen: 8, Batch: 4, ProbeBatch: 2,
		LR: 3e-3, CorpusBytes: 100_000, Seed: 1, TopK: 2, DB: db, Run: "smoke", Listen: "off"}
	if err := run(context.Background(), c, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snaps, err := st.Snapshots("smoke", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) == 0 {
		t.Fatal("no snapshot stored")
	}
	kinds := map[string]bool{}
	for _, s := range snaps {
		if s.Failure != "" {
			t.Errorf("step %d: %s %s", s.Step, s.Failure, s.Detail)
		}
		if s.Trace != nil {
			for _, b := range s.Trace.Blocks {
				kinds[b.Name] = true
			}
		}
	}
	for _, k := range []string{"embedding", "attention QK", "attention VO", "MLP", "norm", "head"} {
		if !kinds[k] {
			t.Errorf("no block trace for kind %q (have %v)", k, kinds)
		}
	}
}
