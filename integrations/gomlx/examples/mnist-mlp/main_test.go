package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hessmon/hessmon/data"
	hgomlx "github.com/hessmon/hessmon/integrations/gomlx"
	"github.com/hessmon/hessmon/store"
)

// TestRunWritesStore trains for a few steps on a slice of MNIST and reads
// the store back. It skips when the GoMNIST data is not in the module cache.
// TestMain opts into the fast matmul VJPs as main does.
func TestMain(m *testing.M) {
	hgomlx.UseFastVJPs()
	os.Exit(m.Run())
}

func TestRunWritesStore(t *testing.T) {
	if _, err := data.MNISTDir(); errors.Is(err, data.ErrNoMNIST) {
		t.Skip(err)
	}
	db := filepath.Join(t.TempDir(), "m.db")
	c := config{FullEvery: 1, Steps: 10, Every: 5, Batch: 16, ProbeBatch: 64, LR: 0.1, Seed: 1,
		DB: db, Run: "smoke", Listen: "off", TrainSamples: 2000, Async: true}
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
	for _, s := range snaps {
		// A due step that finds the full probe still running gets a light one.
		if s.Failure != "" || len(s.Eigenvalues) == 0 || s.LambdaMin == nil || (!s.IsLight() && (s.Trace == nil || len(s.Trace.Blocks) != 6)) {
			t.Errorf("step %d: failure %q %s, %d eigenvalues", s.Step, s.Failure, s.Detail, len(s.Eigenvalues))
		}
	}
}
