//go:build mpi

package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/hvp/mpi"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// openSharded initialises MPI and builds the Hessian of the mean loss over
// all of d, each rank applying its shard in chunks of at most chunk samples
// (hessian.NewSharded, which fails on all ranks together).
func openSharded(ctx context.Context, net *trainer.Network, d *data.Dataset, mode trainer.Mode, chunk int) (*shardedHessian, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	comm, err := mpi.Init()
	if err != nil {
		return nil, fmt.Errorf("--distributed: %w", err)
	}
	op, err := hessian.NewSharded(comm, net, d, hessian.ShardOptions{Mode: mode, Chunk: chunk})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("--distributed on rank %d of %d: %w", comm.Rank(), comm.Size(), err), comm.Close())
	}
	return &shardedHessian{op: op, comm: comm, leave: comm.Close}, nil
}

// initComm initialises MPI and returns MPI_COMM_WORLD with the function that
// finalises it, which every rank must call once it has left the lockstep.
func initComm() (hvp.Comm, func() error, error) {
	comm, err := mpi.Init()
	if err != nil {
		return nil, nil, fmt.Errorf("--distributed: %w", err)
	}
	return comm, comm.Close, nil
}
