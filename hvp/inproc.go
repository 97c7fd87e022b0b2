package hvp

import (
	"fmt"
	"sync"
)

// NewInProcGroup returns size communicators, one per rank, that run the
// collectives through shared memory. Each is meant for its own goroutine,
// which plays that rank. Sums are taken once, in rank order, and copied to
// every rank, so all ranks get bit-identical results and runs are
// reproducible. Ranks that enter different collectives, or pass buffers of
// different lengths or different roots, all get an error (where MPI would
// hang or fail), which makes protocol bugs visible in tests. It exists so
// the distributed code paths can be tested without MPI. size < 1 returns
// nil.
func NewInProcGroup(size int) []Comm {
	if size < 1 {
		return nil
	}
	g := &inprocGroup{size: size, calls: make([]inprocCall, size)}
	g.cond = sync.NewCond(&g.mu)
	comms := make([]Comm, size)
	for r := range comms {
		comms[r] = &inprocComm{g: g, rank: r}
	}
	return comms
}

// inprocGroup is one round-based rendezvous: ranks deposit their calls
// (collecting), the last to arrive combines them, then every rank copies
// the result out (draining) before the next round may start.
type inprocGroup struct {
	size int

	mu       sync.Mutex
	cond     *sync.Cond
	draining bool
	arrived  int
	departed int
	calls    []inprocCall
	sum      []float64 // AllreduceSum's result
	bytes    []byte    // Broadcast's result: a copy of root's buffer
	err      error
}

// inprocCall is one rank's side of a collective.
type inprocCall struct {
	op     string // "AllreduceSum" or "Broadcast"
	floats []float64
	bytes  []byte
	root   int
}

func (c inprocCall) len() int {
	if c.op == opBroadcast {
		return len(c.bytes)
	}
	return len(c.floats)
}

const (
	opAllreduce = "AllreduceSum"
	opBroadcast = "Broadcast"
)

type inprocComm struct {
	g    *inprocGroup
	rank int
}

func (c *inprocComm) Rank() int { return c.rank }
func (c *inprocComm) Size() int { return c.g.size }

// AllreduceSum blocks until every rank of the group has called it.
func (c *inprocComm) AllreduceSum(buf []float64) error {
	return c.collective(inprocCall{op: opAllreduce, floats: buf})
}

// Broadcast blocks until every rank of the group has called it.
func (c *inprocComm) Broadcast(buf []byte, root int) error {
	return c.collective(inprocCall{op: opBroadcast, bytes: buf, root: root})
}

func (c *inprocComm) collective(call inprocCall) error {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.draining { // the previous round is still being copied out
		g.cond.Wait()
	}
	g.calls[c.rank] = call
	g.arrived++
	if g.arrived == g.size {
		g.combine()
		g.draining = true
		g.cond.Broadcast()
	} else {
		for !g.draining {
			g.cond.Wait()
		}
	}
	err := g.err
	if err == nil {
		if call.op == opAllreduce {
			copy(call.floats, g.sum)
		} else {
			copy(call.bytes, g.bytes)
		}
	}
	g.departed++
	if g.departed == g.size {
		g.arrived, g.departed, g.draining, g.err = 0, 0, false, nil
		clear(g.calls)
		g.cond.Broadcast()
	}
	return err
}

// combine checks that the deposited calls match and computes the result.
// g.mu is held.
func (g *inprocGroup) combine() {
	first := g.calls[0]
	for r, c := range g.calls {
		switch {
		case c.op != first.op:
			g.err = fmt.Errorf("hvp: mismatched collectives: %s on rank 0 but %s on rank %d", first.op, c.op, r)
			return
		case c.len() != first.len():
			g.err = fmt.Errorf("%w: %s with len %d on rank 0 but %d on rank %d", ErrDim, c.op, first.len(), c.len(), r)
			return
		case c.op == opBroadcast && c.root != first.root:
			g.err = fmt.Errorf("hvp: Broadcast from root %d on rank 0 but %d on rank %d", first.root, c.root, r)
			return
		case c.op == opBroadcast && (c.root < 0 || c.root >= g.size):
			g.err = fmt.Errorf("hvp: Broadcast from root %d in a group of %d", c.root, g.size)
			return
		}
	}
	if first.op == opBroadcast {
		g.bytes = append(g.bytes[:0], g.calls[first.root].bytes...)
		return
	}
	n := len(first.floats)
	if cap(g.sum) < n {
		g.sum = make([]float64, n)
	}
	g.sum = g.sum[:n]
	copy(g.sum, first.floats)
	for _, c := range g.calls[1:] {
		for i, x := range c.floats {
			g.sum[i] += x
		}
	}
}
