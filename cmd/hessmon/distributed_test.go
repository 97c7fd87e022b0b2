//go:build !mpi

package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/trainer"
)

// The pure-Go build must refuse --distributed with advice, not crash.
func TestDistributedNeedsMPIBuild(t *testing.T) {
	s, err := openSharded(context.Background(), nil, nil, trainer.ModeEval, 1)
	if !errors.Is(err, errNoMPI) || s != nil {
		t.Fatalf("openSharded = %v, %v; want errNoMPI", s, err)
	}
	if !strings.Contains(err.Error(), "-tags mpi") {
		t.Errorf("error %q does not say how to get MPI", err)
	}
}
