package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/internal/testutil"
)

// runRefused runs `hessmon train` with args and a fresh --db, and fails t
// unless it exits with code and a stderr holding every one of want, without
// touching the store.
func runRefused(t *testing.T, code int, args []string, want ...string) {
	t.Helper()
	db := t.TempDir() + "/never.db"
	var stdout, stderr testutil.SyncBuffer
	args = append(append([]string{"train"}, args...), "--db", db, "--listen", "off", "--progress", "off")
	got := run(context.Background(), args, &stdout, &stderr)
	for _, w := range want {
		if got != code || !strings.Contains(stderr.String(), w) {
			t.Fatalf("%v: exit %d, stderr %q; want exit %d with %q", args, got, stderr.String(), code, w)
		}
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%v touched the store %s: %v", args, db, err)
	}
}

// TestProbeBatchLargerThanTheDataIsRefused: --probe-batch beyond the
// training set (6,000 synthetic samples here, 60,000 for MNIST) is a usage
// error that names both sizes; the whole set is accepted.
func TestProbeBatchLargerThanTheDataIsRefused(t *testing.T) {
	runRefused(t, 2, []string{"--data", "synthetic", "--probe-batch", "6001", "--steps", "1"}, "--probe-batch 6001", "has 6000")
	if _, _, _, err := (&modelFlags{model: "mlp", hidden: "8", act: "tanh", data: "synthetic", seed: 1}).setupProbe(6000); err != nil {
		t.Errorf("a probe batch of the whole set: %v", err)
	}
}
