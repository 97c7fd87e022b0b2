//go:build !mpi

package main

import (
	"context"
	"errors"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
)

// errNoMPI is what --distributed says in the default, pure-Go build.
var errNoMPI = errors.New("hessmon was built without MPI; rebuild with -tags mpi (needs libopenmpi-dev) and run under mpirun")

// distributedOperator needs the MPI build (distributed_mpi.go).
func distributedOperator(context.Context, *trainer.Network, *data.Dataset, trainer.Mode, int) (hvp.Operator, int, int, func(), error) {
	return nil, 0, 0, nil, errNoMPI
}

// initComm needs the MPI build (distributed_mpi.go).
func initComm() (hvp.Comm, func() error, error) { return nil, nil, errNoMPI }
