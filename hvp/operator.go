// Package hvp provides Hessian-vector products as symmetric linear operators.
//
// Everything in hessmon that looks at curvature sees the Hessian only through
// the Operator interface: v ↦ H·v. Estimators never touch a model, so they can
// be tested on plain dense matrices and reused with any training loop.
package hvp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
)

// Operator is a symmetric linear operator, typically a loss Hessian.
//
// Apply writes H·v into dst. dst and v must both have length Dim() and must
// not alias. Implementations must be deterministic for a fixed input so that
// estimators can certify their results.
type Operator interface {
	Dim() int
	Apply(dst, v []float64) error
}

// ErrDim reports a vector whose length does not match the operator.
var ErrDim = errors.New("hvp: dimension mismatch")

// ErrNonFinite marks a product that is NaN or infinite because the model or
// its loss has diverged. Operators wrap it so that the monitor can record
// such a probe as failure "nan" rather than as an error.
var ErrNonFinite = errors.New("hvp: non-finite Hessian-vector product")

func checkDims(n int, dst, v []float64) error {
	if len(dst) != n || len(v) != n {
		return fmt.Errorf("%w: operator dim %d, len(dst)=%d, len(v)=%d", ErrDim, n, len(dst), len(v))
	}
	return nil
}

// Dense is an explicit symmetric matrix used as an operator. It exists for
// tests and for small problems where the truth is cheap to compute.
type Dense struct {
	m *mat.SymDense
}

// NewDense wraps a symmetric matrix. The matrix is used, not copied.
func NewDense(m *mat.SymDense) *Dense { return &Dense{m: m} }

// NewDenseFromRows builds a Dense operator from a row-major square matrix,
// checking symmetry to the given absolute tolerance.
func NewDenseFromRows(n int, data []float64, tol float64) (*Dense, error) {
	if len(data) != n*n {
		return nil, fmt.Errorf("%w: want %d entries, have %d", ErrDim, n*n, len(data))
	}
	s := mat.NewSymDense(n, nil)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			a, b := data[i*n+j], data[j*n+i]
			if math.Abs(a-b) > tol {
				return nil, fmt.Errorf("hvp: matrix not symmetric at (%d,%d): %g vs %g", i, j, a, b)
			}
			s.SetSym(i, j, (a+b)/2)
		}
	}
	return &Dense{m: s}, nil
}

// Dim returns the matrix order.
func (d *Dense) Dim() int { return d.m.SymmetricDim() }

// Matrix returns the underlying matrix.
func (d *Dense) Matrix() *mat.SymDense { return d.m }

// Apply computes dst = M·v.
func (d *Dense) Apply(dst, v []float64) error {
	n := d.Dim()
	if err := checkDims(n, dst, v); err != nil {
		return err
	}
	blas64.Symv(1, d.m.RawSymmetric(), blas64.Vector{N: n, Inc: 1, Data: v}, 0, blas64.Vector{N: n, Inc: 1, Data: dst})
	return nil
}

// GradientFunc computes the gradient of a loss at parameters x into dst.
// It must not retain dst or x.
type GradientFunc func(dst, x []float64) error

// FiniteDiff approximates H·v by central differences of a gradient:
//
//	H·v ≈ (∇L(x + h·v̂) − ∇L(x − h·v̂)) / (2h) · ‖v‖,   v̂ = v/‖v‖.
//
// It is the plug for training loops that are not hessmon's: all they need to
// expose is a gradient. The step h defaults to ε^(1/3)·max(1, ‖x‖∞), the
// choice that balances the O(h²) truncation error of the central difference
// against the O(ε/h) rounding error of the two gradients (ε = 2⁻⁵²). With
// float64 gradients this gives about 10 correct significant digits.
type FiniteDiff struct {
	Grad GradientFunc
	X    []float64 // the point at which H is taken; not modified
	// Step overrides the automatic step size when > 0.
	Step float64

	mu         sync.Mutex
	xp, gp, gm []float64
}

// NewFiniteDiff returns a finite-difference operator at x. x is copied, so the
// operator keeps describing H at this point while training moves on.
func NewFiniteDiff(grad GradientFunc, x []float64) *FiniteDiff {
	return &FiniteDiff{Grad: grad, X: append([]float64(nil), x...)}
}

// Dim returns len(X).
func (f *FiniteDiff) Dim() int { return len(f.X) }

// StepSize returns the step used along a unit direction.
func (f *FiniteDiff) StepSize() float64 {
	if f.Step > 0 {
		return f.Step
	}
	scale := math.Max(1, floats.Norm(f.X, math.Inf(1)))
	return math.Cbrt(0x1p-52) * scale
}

// Apply computes the central-difference approximation of H·v. Calls are
// serialised because the gradient buffers are shared.
func (f *FiniteDiff) Apply(dst, v []float64) error {
	n := f.Dim()
	if err := checkDims(n, dst, v); err != nil {
		return err
	}
	nv := floats.Norm(v, 2)
	if nv == 0 {
		clear(dst)
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.xp) != n {
		f.xp, f.gp, f.gm = make([]float64, n), make([]float64, n), make([]float64, n)
	}
	h := f.StepSize()
	a := h / nv
	floats.AddScaledTo(f.xp, f.X, a, v)
	if err := f.Grad(f.gp, f.xp); err != nil {
		return fmt.Errorf("hvp: finite difference gradient at x+hv: %w", err)
	}
	floats.AddScaledTo(f.xp, f.X, -a, v)
	if err := f.Grad(f.gm, f.xp); err != nil {
		return fmt.Errorf("hvp: finite difference gradient at x-hv: %w", err)
	}
	floats.SubTo(dst, f.gp, f.gm)
	floats.Scale(1/(2*a), dst)
	return nil
}

// Mean is the weighted average of several operators of the same dimension,
// applied concurrently. With one operator per batch and weights equal to the
// batch sizes it is the Hessian of the mean loss over the whole data set,
// PyHessian's "full dataset" mode.
type Mean struct {
	ops     []Operator
	weights []float64 // normalised to sum 1
	bufs    [][]float64
	workers atomic.Int64
}

// SetWorkers bounds the operators applied concurrently by later Apply calls
// (n ≤ 0: one per operator, the default). It is safe to call while another
// goroutine applies the operator, so a caller can hand a running estimator
// more cores when they fall idle.
func (m *Mean) SetWorkers(n int) { m.workers.Store(int64(n)) }

// NewMean averages ops with the given non-negative weights (nil means equal
// weights). Each operator must be safe to use from its own goroutine.
func NewMean(ops []Operator, weights []float64) (*Mean, error) {
	if len(ops) == 0 {
		return nil, errors.New("hvp: Mean needs at least one operator")
	}
	n := ops[0].Dim()
	for i, op := range ops {
		if op.Dim() != n {
			return nil, fmt.Errorf("%w: operator %d has dim %d, operator 0 has %d", ErrDim, i, op.Dim(), n)
		}
	}
	w := make([]float64, len(ops))
	if weights == nil {
		for i := range w {
			w[i] = 1
		}
	} else {
		if len(weights) != len(ops) {
			return nil, fmt.Errorf("hvp: %d weights for %d operators", len(weights), len(ops))
		}
		copy(w, weights)
	}
	var sum float64
	for i, x := range w {
		if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("hvp: weight %d is %g, want a finite non-negative number", i, x)
		}
		sum += x
	}
	if sum == 0 {
		return nil, errors.New("hvp: weights sum to zero")
	}
	floats.Scale(1/sum, w)
	bufs := make([][]float64, len(ops))
	for i := range bufs {
		bufs[i] = make([]float64, n)
	}
	return &Mean{ops: ops, weights: w, bufs: bufs}, nil
}

// Dim returns the common dimension.
func (m *Mean) Dim() int { return m.ops[0].Dim() }

// Apply computes dst = Σ wᵢ Hᵢ v, running the operators concurrently. The sum
// is taken in a fixed order so the result does not depend on scheduling.
func (m *Mean) Apply(dst, v []float64) error {
	if err := checkDims(m.Dim(), dst, v); err != nil {
		return err
	}
	workers := int(m.workers.Load())
	if workers <= 0 || workers > len(m.ops) {
		workers = len(m.ops)
	}
	errs := make([]error, len(m.ops))
	if workers == 1 {
		// On the caller's goroutine, so that the work stays on its core.
		for i, op := range m.ops {
			errs[i] = op.Apply(m.bufs[i], v)
		}
		return m.sum(dst, errs)
	}
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, op := range m.ops {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = op.Apply(m.bufs[i], v)
		}()
	}
	wg.Wait()
	return m.sum(dst, errs)
}

// sum writes Σ wᵢ bufsᵢ in a fixed order, or the joined errors.
func (m *Mean) sum(dst []float64, errs []error) error {
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("hvp: Mean: %w", err)
	}
	clear(dst)
	for i := range m.ops {
		floats.AddScaled(dst, m.weights[i], m.bufs[i])
	}
	return nil
}

// Counting wraps an operator and counts Apply calls. Estimators report their
// own counts; this is for callers that want to audit them.
type Counting struct {
	Op Operator
	mu sync.Mutex
	n  int
}

// Dim returns the wrapped operator's dimension.
func (c *Counting) Dim() int { return c.Op.Dim() }

// Apply forwards to the wrapped operator and counts the call.
func (c *Counting) Apply(dst, v []float64) error {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Op.Apply(dst, v)
}

// Count returns the number of Apply calls so far.
func (c *Counting) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// ApplyContext is Apply with a cancellation check first; long-running
// estimators call it between products.
func ApplyContext(ctx context.Context, op Operator, dst, v []float64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return op.Apply(dst, v)
}
