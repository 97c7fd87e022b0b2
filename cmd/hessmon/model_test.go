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

// TestProbeBatchLargerThanTheDataIsRefused: --probe-batch beyond the
// training set (6,000 synthetic samples here, 60,000 for MNIST) is a usage
// error that names both sizes, before the store is touched; the whole set
// is accepted.
func TestProbeBatchLargerThanTheDataIsRefused(t *testing.T) {
	db := t.TempDir() + "/never.db"
	var stdout, stderr testutil.SyncBuffer
	code := run(context.Background(), []string{"train", "--data", "synthetic", "--probe-batch", "6001", "--steps", "1",
		"--db", db, "--listen", "off", "--progress", "off"}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "--probe-batch 6001") || !strings.Contains(stderr.String(), "has 6000") {
		t.Fatalf("exit %d, stderr %q; want exit 2 naming --probe-batch 6001 and the 6000 samples", code, stderr.String())
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused run touched the store %s: %v", db, err)
	}
	if _, _, _, err := (&modelFlags{model: "mlp", hidden: "8", act: "tanh", data: "synthetic", seed: 1}).setupProbe(6000); err != nil {
		t.Errorf("a probe batch of the whole set: %v", err)
	}
}
