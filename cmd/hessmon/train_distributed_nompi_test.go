//go:build !mpi

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

// In the pure-Go build `train --distributed` must stop with the advice to
// rebuild, before it touches the store.
func TestTrainDistributedNeedsMPIBuild(t *testing.T) {
	db := t.TempDir() + "/never.db"
	var stdout, stderr testutil.SyncBuffer
	code := run(context.Background(), []string{"train", "--distributed", "--data", "synthetic", "--steps", "10", "--db", db,
		"--listen", "off", "--progress", "off"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), errNoMPI.Error()) {
		t.Fatalf("exit %d, stderr %q; want exit 1 with %q", code, stderr.String(), errNoMPI)
	}
	if _, err := os.Stat(db); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the pure-Go build touched the store %s: %v", db, err)
	}
}
