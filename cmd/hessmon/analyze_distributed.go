package main

import (
	"context"
	"log/slog"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
)

// shardedHessian is `analyze --distributed`'s operator (hessian.NewSharded)
// and the process group it all-reduces over.
type shardedHessian struct {
	op    *hvp.AllReduce
	comm  hvp.Comm
	leave func() error // finalises MPI
}

// close prints rank 0's communication share to stderr and leaves the
// group; every rank must call it.
func (s *shardedHessian) close() {
	if s.comm.Rank() == 0 {
		st := s.op.Stats()
		slog.Info("distributed HVPs", "ranks", s.comm.Size(), "samples_per_rank", s.op.LocalCount(), "hvps", st.Applies,
			"local_seconds", st.Local.Seconds(), "allreduce_seconds", st.Reduce.Seconds(), "allreduce_share", st.ReduceShare())
	}
	if err := s.leave(); err != nil {
		slog.Error("finalising MPI", "rank", s.comm.Rank(), "err", err)
	}
}

// distributedOperator is openSharded in the shape analyze.go calls.
// TODO(coordinator): analyze.go can call openSharded and drop this shim.
func distributedOperator(ctx context.Context, net *trainer.Network, d *data.Dataset, mode trainer.Mode, chunk int) (hvp.Operator, int, int, func(), error) {
	s, err := openSharded(ctx, net, d, mode, chunk)
	if err != nil {
		return nil, 0, 0, nil, err
	}
	return s.op, s.comm.Rank(), s.comm.Size(), s.close, nil
}
