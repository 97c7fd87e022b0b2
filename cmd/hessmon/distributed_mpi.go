//go:build mpi

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/hvp/mpi"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// distributedOperator initialises MPI, keeps this rank's contiguous shard of
// d, builds the exact Hessian of that shard (chunks of at most chunk
// samples) and wraps it in an all-reduce, so every rank applies the Hessian
// of the mean loss over all of d. The returned function prints rank 0's
// communication share to stderr and finalises MPI; every rank must call it.
//
// Every step that can fail does so on all ranks together (the shard split
// depends only on d.Len() and the group size; NewAllReduce is collective),
// so no rank is left waiting in a collective call for one that gave up.
func distributedOperator(ctx context.Context, net *trainer.Network, d *data.Dataset, mode trainer.Mode, chunk int) (hvp.Operator, int, int, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, 0, nil, err
	}
	comm, err := mpi.Init()
	if err != nil {
		return nil, 0, 0, nil, fmt.Errorf("--distributed: %w", err)
	}
	fail := func(err error) (hvp.Operator, int, int, func(), error) {
		return nil, 0, 0, nil, errors.Join(fmt.Errorf("--distributed on rank %d of %d: %w", comm.Rank(), comm.Size(), err), comm.Close())
	}
	shard, err := hessian.ShardDataset(d, comm)
	if err != nil {
		return fail(err)
	}
	local, localErr := hessian.NewChunked(net, trainer.HeadBatch(shard, 0), trainer.CrossEntropy{}, mode, chunk)
	if localErr != nil {
		local = nil // NewAllReduce then fails on every rank, not only here
	}
	op, err := hvp.NewAllReduce(comm, local, shard.Len())
	if err != nil {
		return fail(errors.Join(localErr, err))
	}
	closeFn := func() {
		if comm.Rank() == 0 {
			s := op.Stats()
			slog.Info("distributed HVPs", "ranks", comm.Size(), "samples_per_rank", shard.Len(), "hvps", s.Applies,
				"local_seconds", s.Local.Seconds(), "allreduce_seconds", s.Reduce.Seconds(), "allreduce_share", s.ReduceShare())
		}
		if err := comm.Close(); err != nil {
			slog.Error("finalising MPI", "rank", comm.Rank(), "err", err)
		}
	}
	return op, comm.Rank(), comm.Size(), closeFn, nil
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
