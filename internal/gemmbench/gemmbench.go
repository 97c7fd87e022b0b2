// Package gemmbench times a model's matrix products alone, on scratch
// operands, for the BLAS rate that `hessmon bench hvp` sets beside the HVP's.
package gemmbench

import (
	"context"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/hessmon/hessmon/trainer"
)

// Timer runs a list of products (trainer.Tape.HVPGEMMs) through the same
// gemm the layers use.
type Timer struct {
	list    []trainer.GEMM
	a, b, c [][]float64
	flops   float64
}

// NewTimer allocates seeded operands for every product of list.
func NewTimer(list []trainer.GEMM) *Timer {
	rng := rand.New(rand.NewPCG(7, 11))
	fill := func(n int) []float64 {
		x := make([]float64, n)
		for i := range x {
			x[i] = rng.Float64() - 0.5
		}
		return x
	}
	t := &Timer{list: slices.Clone(list)}
	for _, g := range list {
		t.a = append(t.a, fill(g.M*g.K))
		t.b = append(t.b, fill(g.K*g.N))
		t.c = append(t.c, fill(g.M*g.N))
		t.flops += g.Flops()
	}
	return t
}

// Flops is the work of one pass over the list.
func (t *Timer) Flops() float64 { return t.flops }

// Run performs every product once and returns the elapsed time.
func (t *Timer) Run(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for i, g := range t.list {
		g.Compute(t.c[i], t.a[i], t.b[i])
	}
	return time.Since(t0), nil
}
