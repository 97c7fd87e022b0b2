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
	op, _, _, closeFn, err := distributedOperator(context.Background(), nil, nil, trainer.ModeEval, 1)
	if !errors.Is(err, errNoMPI) || op != nil || closeFn != nil {
		t.Fatalf("distributedOperator = %v, %v; want errNoMPI", op, err)
	}
	if !strings.Contains(err.Error(), "-tags mpi") {
		t.Errorf("error %q does not say how to get MPI", err)
	}
}
