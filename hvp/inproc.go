package hvp

import (
	"fmt"
	"sync"
)

// NewInProcGroup returns size communicators, one per rank, that all-reduce
// through shared memory. Each is meant for its own goroutine, which plays
// that rank. Sums are taken once, in rank order, and copied to every rank,
// so all ranks get bit-identical results and runs are reproducible. It
// exists so the distributed code paths can be tested without MPI.
// size < 1 returns nil.
func NewInProcGroup(size int) []Comm {
	if size < 1 {
		return nil
	}
	g := &inprocGroup{size: size, bufs: make([][]float64, size)}
	g.cond = sync.NewCond(&g.mu)
	comms := make([]Comm, size)
	for r := range comms {
		comms[r] = &inprocComm{g: g, rank: r}
	}
	return comms
}

// inprocGroup is one round-based rendezvous: ranks deposit their buffers
// (collecting), the last to arrive sums them, then every rank copies the
// sum out (draining) before the next round may start.
type inprocGroup struct {
	size int

	mu       sync.Mutex
	cond     *sync.Cond
	draining bool
	arrived  int
	departed int
	bufs     [][]float64
	sum      []float64
	err      error
}

type inprocComm struct {
	g    *inprocGroup
	rank int
}

func (c *inprocComm) Rank() int { return c.rank }
func (c *inprocComm) Size() int { return c.g.size }

// AllreduceSum blocks until every rank of the group has called it.
func (c *inprocComm) AllreduceSum(buf []float64) error {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.draining { // the previous round is still being copied out
		g.cond.Wait()
	}
	g.bufs[c.rank] = buf
	g.arrived++
	if g.arrived == g.size {
		g.reduce()
		g.draining = true
		g.cond.Broadcast()
	} else {
		for !g.draining {
			g.cond.Wait()
		}
	}
	err := g.err
	if err == nil {
		copy(buf, g.sum)
	}
	g.departed++
	if g.departed == g.size {
		g.arrived, g.departed, g.draining, g.err = 0, 0, false, nil
		clear(g.bufs)
		g.cond.Broadcast()
	}
	return err
}

// reduce sums the deposited buffers in rank order. g.mu is held.
func (g *inprocGroup) reduce() {
	n := len(g.bufs[0])
	for r, b := range g.bufs {
		if len(b) != n {
			g.err = fmt.Errorf("%w: AllreduceSum with len %d on rank 0 but %d on rank %d", ErrDim, n, len(b), r)
			return
		}
	}
	if cap(g.sum) < n {
		g.sum = make([]float64, n)
	}
	g.sum = g.sum[:n]
	copy(g.sum, g.bufs[0])
	for _, b := range g.bufs[1:] {
		for i, x := range b {
			g.sum[i] += x
		}
	}
}
