package hvp

import (
	"errors"
	"fmt"
	"math"
	"sync"
)

// Preconditioned is the symmetric operator D·H·D with D = diag(d), for an
// operator H.
//
// With d = P^{-1/2} for a positive diagonal preconditioner P it has the
// eigenvalues of P⁻¹H (P⁻¹H = D·(D·H·D)·D⁻¹ is similar to it) while staying
// symmetric, so the Krylov eigensolvers apply. This is the "preconditioned
// sharpness" of an adaptive optimiser θ ← θ − η·P⁻¹·m (Cohen et al. 2022),
// whose edge-of-stability threshold is stated for λ1(P⁻¹H), not λ1(H).
// Eigenvectors u of D·H·D map to eigenvectors D·u of P⁻¹H.
//
// Each Apply is one Apply of H plus 2·Dim multiplications. Apply is safe for
// concurrent use when H's Apply is.
type Preconditioned struct {
	op   Operator
	d    []float64
	bufs sync.Pool // *[]float64 of length Dim: D·v
}

// NewPreconditioned returns D·H·D for H = op and D = diag(d). d is copied;
// each entry must be positive and finite, and len(d) must be op.Dim().
func NewPreconditioned(op Operator, d []float64) (*Preconditioned, error) {
	if op == nil {
		return nil, errors.New("hvp: Preconditioned needs an operator")
	}
	if len(d) != op.Dim() {
		return nil, fmt.Errorf("%w: preconditioner diagonal has %d entries, operator dim %d", ErrDim, len(d), op.Dim())
	}
	for i, x := range d {
		if !(x > 0) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("hvp: preconditioner scale d[%d] = %g, want a positive finite number", i, x)
		}
	}
	return &Preconditioned{op: op, d: append([]float64(nil), d...)}, nil
}

// NewInversePreconditioned returns P^{-1/2}·H·P^{-1/2} for P = diag(p), the
// symmetric form of P⁻¹H, from the preconditioner's diagonal itself (as
// trainer.Adam.Preconditioner writes it). Each p[i] must be positive and
// finite.
func NewInversePreconditioned(op Operator, p []float64) (*Preconditioned, error) {
	if op == nil {
		return nil, errors.New("hvp: Preconditioned needs an operator")
	}
	if len(p) != op.Dim() {
		return nil, fmt.Errorf("%w: preconditioner diagonal has %d entries, operator dim %d", ErrDim, len(p), op.Dim())
	}
	d := make([]float64, len(p))
	for i, x := range p {
		if !(x > 0) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("hvp: preconditioner P[%d] = %g, want a positive finite number", i, x)
		}
		d[i] = 1 / math.Sqrt(x) // finite: √ of the smallest denormal is 2e-162
	}
	return &Preconditioned{op: op, d: d}, nil
}

// Dim returns the wrapped operator's dimension.
func (p *Preconditioned) Dim() int { return len(p.d) }

// Scale returns a copy of the diagonal d of D.
func (p *Preconditioned) Scale() []float64 { return append([]float64(nil), p.d...) }

// Unwrap returns H.
func (p *Preconditioned) Unwrap() Operator { return p.op }

// SetWorkers forwards to H when it has a SetWorkers method (hvp.Mean does),
// so that the monitor's core budgeting still reaches it.
func (p *Preconditioned) SetWorkers(n int) {
	if w, ok := p.op.(interface{ SetWorkers(int) }); ok {
		w.SetWorkers(n)
	}
}

// Apply computes dst = D·H·(D·v).
func (p *Preconditioned) Apply(dst, v []float64) error {
	n := p.Dim()
	if err := checkDims(n, dst, v); err != nil {
		return err
	}
	bp, _ := p.bufs.Get().(*[]float64)
	if bp == nil {
		b := make([]float64, n)
		bp = &b
	}
	defer p.bufs.Put(bp)
	dv := *bp
	for i, x := range v {
		dv[i] = p.d[i] * x
	}
	if err := p.op.Apply(dst, dv); err != nil {
		return err
	}
	for i := range dst {
		dst[i] *= p.d[i]
	}
	return nil
}
