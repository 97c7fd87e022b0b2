package main

import (
	"log/slog"

	"github.com/hessmon/hessmon/hvp"
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
