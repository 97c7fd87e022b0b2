package hvp

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"gonum.org/v1/gonum/floats"
)

// AllReduce is the Hessian of the mean loss over a data set sharded across
// the ranks of a Comm: each rank applies the Hessian of its own shard and
// the ranks sum the products weighted by shard size,
//
//	H·v = Σ_r (n_r / N) · H_r·v,   N = Σ_r n_r,
//
// which is PyHessian's dataloader (full data set) mode run data-parallel.
// Every rank gets the same, global product, so every rank can run the same
// estimator with the same seeds and reach the same result.
//
// Apply is collective: all ranks must call it the same number of times in
// the same order (estimators do, given equal options and seeds), and calls
// on one rank must not overlap. A failure of the local operator on one rank
// is reported on every rank, so no rank is left waiting.
type AllReduce struct {
	comm        Comm
	local       Operator
	n           int
	localCount  int
	globalCount int
	loss        float64

	mu    sync.Mutex
	buf   []float64 // the product plus one failure flag, reduced together
	stats AllReduceStats
}

// AllReduceStats is the cumulative cost of an AllReduce on this rank, for
// judging how well a run scales.
type AllReduceStats struct {
	Applies int
	// Local is the time spent in the local operator.
	Local time.Duration
	// Reduce is the time spent in AllreduceSum. It includes waiting for
	// slower ranks, so it also measures load imbalance.
	Reduce time.Duration
}

// ReduceShare is Reduce/(Local+Reduce): the share of HVP time spent
// communicating (0 before the first Apply).
func (s AllReduceStats) ReduceShare() float64 {
	t := s.Local + s.Reduce
	if t == 0 {
		return 0
	}
	return float64(s.Reduce) / float64(t)
}

// handshake is the per-rank record exchanged by NewAllReduce.
const (
	hsCount = iota
	hsDim
	hsHasLoss
	hsLoss
	hsBad
	hsLen
)

// NewAllReduce wraps local, the Hessian of the mean loss over this rank's
// localCount samples. It is collective: every rank of comm must call it.
// The ranks exchange sample counts, dimensions and losses once; if any
// rank's arguments are invalid, every rank returns an error.
func NewAllReduce(comm Comm, local Operator, localCount int) (*AllReduce, error) {
	if comm == nil {
		return nil, errors.New("hvp: NewAllReduce: nil Comm")
	}
	rank, size := comm.Rank(), comm.Size()
	if size < 1 || rank < 0 || rank >= size {
		return nil, fmt.Errorf("hvp: NewAllReduce: rank %d of a group of %d", rank, size)
	}
	// Each rank fills its own row, so after the sum every rank sees every
	// rank's record exactly (one non-zero term per entry).
	table := make([]float64, hsLen*size)
	row := table[rank*hsLen : (rank+1)*hsLen]
	var localErr error
	switch {
	case local == nil:
		localErr = errors.New("nil local operator")
	case localCount < 0:
		localErr = fmt.Errorf("negative sample count %d", localCount)
	default:
		row[hsCount], row[hsDim] = float64(localCount), float64(local.Dim())
		if l, ok := local.(interface{ Loss() float64 }); ok {
			row[hsHasLoss], row[hsLoss] = 1, l.Loss()
		}
	}
	if localErr != nil {
		row[hsBad] = 1
	}
	if err := comm.AllreduceSum(table); err != nil {
		return nil, fmt.Errorf("hvp: NewAllReduce: exchanging sample counts: %w", err)
	}
	if localErr != nil {
		return nil, fmt.Errorf("hvp: NewAllReduce on rank %d: %s", rank, localErr)
	}
	var global, loss float64
	hasLoss := true
	n := table[hsDim]
	for r := range size {
		rec := table[r*hsLen : (r+1)*hsLen]
		if rec[hsBad] != 0 {
			return nil, fmt.Errorf("hvp: NewAllReduce: rank %d has invalid arguments", r)
		}
		if rec[hsDim] != n {
			return nil, fmt.Errorf("%w: NewAllReduce: operator dim %g on rank 0 but %g on rank %d", ErrDim, n, rec[hsDim], r)
		}
		global += rec[hsCount]
		loss += rec[hsLoss] * rec[hsCount]
		hasLoss = hasLoss && rec[hsHasLoss] == 1
	}
	if global == 0 {
		return nil, errors.New("hvp: NewAllReduce: no samples on any rank")
	}
	a := &AllReduce{comm: comm, local: local, n: int(n), localCount: localCount, globalCount: int(global),
		loss: math.NaN(), buf: make([]float64, int(n)+1)}
	if hasLoss {
		a.loss = loss / global
	}
	return a, nil
}

// Dim is the number of parameters.
func (a *AllReduce) Dim() int { return a.n }

// Apply computes the global mean H·v on every rank (see AllReduce).
func (a *AllReduce) Apply(dst, v []float64) error {
	if err := checkDims(a.n, dst, v); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	prod, flag := a.buf[:a.n], &a.buf[a.n]
	start := time.Now()
	var localErr error
	if a.localCount > 0 {
		localErr = a.local.Apply(prod, v)
	}
	if a.localCount == 0 || localErr != nil {
		clear(prod)
	} else {
		floats.Scale(float64(a.localCount)/float64(a.globalCount), prod)
	}
	*flag = 0
	if localErr != nil {
		*flag = 1
	}
	mid := time.Now()
	err := a.comm.AllreduceSum(a.buf)
	a.stats.Applies++
	a.stats.Local += mid.Sub(start)
	a.stats.Reduce += time.Since(mid)
	switch {
	case err != nil:
		return fmt.Errorf("hvp: AllReduce: %w", err)
	case localErr != nil:
		return fmt.Errorf("hvp: AllReduce: local product on rank %d: %w", a.comm.Rank(), localErr)
	case *flag != 0:
		return fmt.Errorf("hvp: AllReduce: the local product failed on %d other rank(s)", int(*flag))
	}
	copy(dst, prod)
	return nil
}

// Loss is the mean loss over all samples of all ranks, or NaN if some
// rank's local operator does not report a loss.
func (a *AllReduce) Loss() float64 { return a.loss }

// LocalCount is the number of samples on this rank.
func (a *AllReduce) LocalCount() int { return a.localCount }

// GlobalCount is the number of samples on all ranks.
func (a *AllReduce) GlobalCount() int { return a.globalCount }

// Comm is the process group.
func (a *AllReduce) Comm() Comm { return a.comm }

// Stats returns this rank's cumulative timings.
func (a *AllReduce) Stats() AllReduceStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}
