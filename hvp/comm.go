package hvp

import "fmt"

// Comm is a group of processes (ranks) that hold shards of one data set and
// run the same estimator calls in lockstep. It is the seam between hessmon
// and a message-passing engine: hvp/mpi implements it over MPI, and
// NewInProcGroup over goroutines for tests.
//
// Both collectives must be called by every rank the same number of times,
// in the same order, with equally long buffers (and, for Broadcast, the
// same root):
//
//   - AllreduceSum replaces buf, on every rank, by the elementwise sum of
//     the bufs of all ranks. On return every rank must hold bit-identical
//     values, or estimators running in lockstep could take different
//     branches and deadlock.
//   - Broadcast copies root's buf into every other rank's buf, byte for
//     byte. It is how one rank's state (a warm start, a decision) reaches
//     the others exactly; a sum cannot carry raw bits (−0 + 0 = +0).
type Comm interface {
	Rank() int
	Size() int
	AllreduceSum(buf []float64) error
	Broadcast(buf []byte, root int) error
}

// Shard returns the contiguous block [from, to) of n samples that rank
// owns in a group of size ranks. Blocks are in rank order and their sizes
// differ by at most one (the first n mod size ranks get one more), so the
// split depends only on (n, size) and every rank computes the same one.
func Shard(n, rank, size int) (from, to int, err error) {
	if size < 1 || rank < 0 || rank >= size {
		return 0, 0, fmt.Errorf("hvp: rank %d of a group of %d", rank, size)
	}
	if n < size {
		return 0, 0, fmt.Errorf("hvp: %d samples cannot be sharded over %d ranks (every rank needs at least one)", n, size)
	}
	q, r := n/size, n%size
	from = rank*q + min(rank, r)
	to = from + q
	if rank < r {
		to++
	}
	return from, to, nil
}
