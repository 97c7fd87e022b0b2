package estimators

import (
	"context"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat"

	"github.com/hessmon/hessmon/hvp"
)

// esdStream keeps ESD probe ids apart from trace probe ids.
const esdStream uint64 = 1 << 63

// esdBasisSpare is the room, in n-vectors, that a single probe's kept
// basis and products leave for an eigen solve to grow them in place: the
// warm vectors of a top-5 solve and three corrections. The room is
// resident whether or not it is used (the heap zeroes reused spans), so
// it is not the refinement's whole reserve: a solve that needs more grows
// once, by a copy. Measured with train at 1.86M parameters, 16 rows cost
// more peak RSS than the copies they saved.
const esdBasisSpare = 8

// ESDOptions configures ESD. Defaults are PyHessian's density(iter=100, n_v=1).
type ESDOptions struct {
	// Probes is the number of random start vectors n_v (default 1).
	Probes int
	// Steps is the number of Lanczos steps m per probe (default 100,
	// at most Dim). Memory is Steps·Dim floats.
	Steps int
	Seed  uint64
	// KeepBasis returns the Lanczos vectors and their exact products in the
	// result, so that an eigen solve can start from the same Krylov space
	// at no HVP cost (EigenOptions.Subspace).
	KeepBasis bool
}

// ESDResult is a stochastic Lanczos quadrature of the spectral density
// φ(t) = (1/n) Σ δ(t − λᵢ): Σ Weights·f(Nodes) ≈ (1/n) Σ f(λᵢ).
type ESDResult struct {
	// Nodes and Weights are flattened probe-major, Steps entries per probe
	// (Ritz values and squared first eigenvector components divided by
	// Probes). Weights sum to 1. A probe whose Krylov space became
	// invariant after fewer steps is padded with zero-weight copies of its
	// last node; its quadrature is then exact.
	Nodes   []float64
	Weights []float64
	Probes  int
	Steps   int
	HVPs    int
	// Warm reports that the probes were those of the warm state (common
	// random numbers).
	Warm bool
	// Basis and Products (with KeepBasis; views of the solver's storage,
	// one probe's rows back to back) are the unit Lanczos vectors of every
	// probe and H times each, exact products. With one probe the storage
	// has room for esdBasisSpare (8) more rows, which an eigen solve started
	// from it (EigenOptions.Subspace) fills in place.
	Basis, Products [][]float64
}

// ESDWarm makes successive ESDs use the same probe vectors, so that
// differences between snapshots are not probe noise.
type ESDWarm struct {
	Dim  int
	Seed uint64
}

// ESD runs stochastic Lanczos quadrature (SLQ): for each of Probes
// normalised Rademacher vectors, Steps steps of Lanczos with full
// reorthogonalisation; the Ritz values are the nodes and the squared first
// components of the tridiagonal's eigenvectors, over Probes, the weights.
// For a polynomial f of degree < 2·Steps each probe's quadrature equals
// vᵀf(H)v exactly, so moments are Hutchinson estimates (see Moments).
func ESD(ctx context.Context, op hvp.Operator, opt ESDOptions, warm *ESDWarm) (ESDResult, *ESDWarm, error) {
	n := op.Dim()
	probes := opt.Probes
	if probes == 0 {
		probes = 1
	}
	steps := opt.Steps
	if steps == 0 {
		steps = 100
	}
	if n == 0 {
		return ESDResult{}, nil, fmt.Errorf("%w: ESD of a zero-dimensional operator", hvp.ErrDim)
	}
	if probes < 0 || steps < 0 {
		return ESDResult{}, nil, fmt.Errorf("estimators: ESD needs positive probes and steps, have %d and %d", probes, steps)
	}
	steps = min(steps, n)
	seed := opt.Seed
	res := ESDResult{Probes: probes, Steps: steps}
	if warm != nil && warm.Dim == n {
		seed = warm.Seed
		res.Warm = true
	}
	// A single probe's kept basis leaves room for an eigen solve to grow
	// it in place (EigenOptions.Subspace): its warm vectors and
	// corrections are then appended, not the whole basis copied.
	spare := 0
	if opt.KeepBasis && probes == 1 {
		spare = min(esdBasisSpare, n-steps)
	}
	v := make([]float64, steps*n, (steps+spare)*n)
	w := make([]float64, n)
	var prods []float64 // KeepBasis: the products, rows back to back
	if opt.KeepBasis {
		prods = make([]float64, 0, (probes*steps+spare)*n)
	}
	coef := make([]float64, steps)
	alpha := make([]float64, steps)
	beta := make([]float64, steps)
	normEst := 0.0
	for p := 0; p < probes; p++ {
		if p > 0 && opt.KeepBasis {
			v = make([]float64, steps*n) // the kept basis refers to the last probe's
		}
		v0 := v[:n]
		rademacher(v0, seed, esdStream|uint64(p))
		floats.Scale(1/math.Sqrt(float64(n)), v0)
		s := 0
		for j := 0; j < steps; j++ {
			vj := v[j*n : (j+1)*n]
			if err := hvp.ApplyContext(ctx, op, w, vj); err != nil {
				return res, nil, fmt.Errorf("estimators: Hessian-vector product: %w", err)
			}
			res.HVPs++
			nw := floats.Norm(w, 2)
			if math.IsNaN(nw) || math.IsInf(nw, 0) {
				return res, nil, ErrNonFinite
			}
			if opt.KeepBasis {
				// Views of the Lanczos storage, not copies: one probe's
				// vectors and all products lie back to back, so the eigen
				// solve and the trace's deflation use them in place.
				prods = append(prods, w...)
				res.Basis = append(res.Basis, vj)
				res.Products = append(res.Products, prods[len(prods)-n:])
			}
			normEst = math.Max(normEst, nw)
			alpha[j] = floats.Dot(vj, w)
			s = j + 1
			if j == steps-1 {
				break
			}
			b := lanczosOrth(w, v[:(j+1)*n], n, alpha[j], beta[:j], coef[:j+1])
			if b <= breakRel*normEst || b == 0 {
				break // invariant subspace: the quadrature is exact
			}
			beta[j] = b
			next := v[(j+1)*n : (j+2)*n]
			copy(next, w)
			floats.Scale(1/b, next)
		}
		nodes, weights, err := tridiagQuadrature(alpha[:s], beta[:max(s-1, 0)])
		if err != nil {
			return res, nil, err
		}
		for len(nodes) < steps {
			nodes = append(nodes, nodes[len(nodes)-1])
			weights = append(weights, 0)
		}
		floats.Scale(1/float64(probes), weights)
		res.Nodes = append(res.Nodes, nodes...)
		res.Weights = append(res.Weights, weights...)
	}
	return res, &ESDWarm{Dim: n, Seed: seed}, nil
}

// lanczosOrth turns w = H v_j into the next Lanczos direction and returns
// its norm β_j: the three-term recurrence first (w −= α_j v_j + β_{j−1}
// v_{j−1}), then one classical Gram–Schmidt pass over the whole basis (two
// GEMVs) against the rounding the recurrence lets in, and a second only
// when the first removed most of what was left (Daniel–Gragg–Kaufman–
// Stewart). After the recurrence the pass removes a few ulps, so a second
// is rarely due: half the passes over the basis of unconditional
// reorthogonalisation twice, which were most of the ESD's time.
func lanczosOrth(w, basis []float64, n int, alpha float64, beta, c []float64) float64 {
	j := len(c) - 1
	floats.AddScaled(w, -alpha, basis[j*n:(j+1)*n])
	if j > 0 {
		floats.AddScaled(w, -beta[j-1], basis[(j-1)*n:j*n])
	}
	v := blas64.General{Rows: j + 1, Cols: n, Stride: n, Data: basis}
	nrm := math.Sqrt(floats.Dot(w, w))
	for pass := 0; pass < 3; pass++ {
		blas64.Gemv(blas.NoTrans, 1, v, vec(w), 0, vec(c))
		blas64.Gemv(blas.Trans, -1, v, vec(c), 1, vec(w))
		prev := nrm
		nrm = math.Sqrt(floats.Dot(w, w))
		if nrm > prev/math.Sqrt2 {
			break
		}
	}
	return nrm
}

// tridiagQuadrature returns the Gauss quadrature of the Lanczos tridiagonal
// matrix: its eigenvalues and the squared first components of its unit
// eigenvectors.
func tridiagQuadrature(alpha, beta []float64) (nodes, weights []float64, err error) {
	s := len(alpha)
	t := mat.NewSymDense(s, nil)
	for i := 0; i < s; i++ {
		t.SetSym(i, i, alpha[i])
		if i+1 < s {
			t.SetSym(i, i+1, beta[i])
		}
	}
	var e mat.EigenSym
	if !e.Factorize(t, true) {
		return nil, nil, fmt.Errorf("estimators: eigendecomposition of the %d×%d Lanczos matrix failed", s, s)
	}
	nodes = e.Values(nil)
	var q mat.Dense
	e.VectorsTo(&q)
	weights = make([]float64, s)
	for i := range weights {
		weights[i] = q.At(0, i) * q.At(0, i)
	}
	return nodes, weights, nil
}

// probe returns probe p's nodes and weights.
func (r ESDResult) probe(p int) (nodes, weights []float64) {
	return r.Nodes[p*r.Steps : (p+1)*r.Steps], r.Weights[p*r.Steps : (p+1)*r.Steps]
}

// Moments returns the spectral moments tr(H^j)/n for j = 0..k from the
// quadrature, with standard errors over probes (NaN with a single probe).
// Gauss quadrature is exact for j < 2·Steps, so the error is the Monte
// Carlo error of the probes alone.
func (r ESDResult) Moments(k int) (mean, stderr []float64) {
	if k < 0 {
		return nil, nil
	}
	mean = make([]float64, k+1)
	stderr = make([]float64, k+1)
	if r.Probes == 0 || r.Steps == 0 || len(r.Nodes) != r.Probes*r.Steps {
		for j := range mean {
			mean[j], stderr[j] = math.NaN(), math.NaN()
		}
		return mean, stderr
	}
	per := make([]float64, r.Probes)
	for j := 0; j <= k; j++ {
		for p := range per {
			nodes, weights := r.probe(p)
			var s float64
			for i, x := range nodes {
				s += weights[i] * math.Pow(x, float64(j))
			}
			per[p] = s * float64(r.Probes)
		}
		mean[j] = stat.Mean(per, nil)
		stderr[j] = math.NaN()
		if r.Probes > 1 {
			stderr[j] = math.Sqrt(stat.Variance(per, nil) / float64(r.Probes))
		}
	}
	return mean, stderr
}

// DensityOptions sets the Gaussian-kernel density of an ESD. Zero values
// select PyHessian's density_generate defaults.
type DensityOptions struct {
	Bins   int     // grid points, default 10000
	Sigma2 float64 // kernel variance before range scaling, default 1e-5
	Margin float64 // absolute margin around the nodes, default 0.01
}

// Density smooths the quadrature into a density on a grid exactly as
// PyHessian's density_generate does: the grid spans the probes' mean
// smallest node − Margin to their mean largest node + Margin in Bins
// points, the kernel variance is Sigma2·max(1, grid range), and the density
// is normalised to unit Riemann sum. It returns the grid, the density and
// the kernel variance used.
func (r ESDResult) Density(opt DensityOptions) (grid, density []float64, variance float64) {
	bins := opt.Bins
	if bins <= 0 {
		bins = 10000
	}
	sigma2 := opt.Sigma2
	if sigma2 <= 0 {
		sigma2 = 1e-5
	}
	margin := opt.Margin
	if margin <= 0 {
		margin = 0.01
	}
	if r.Probes == 0 || r.Steps == 0 || len(r.Nodes) != r.Probes*r.Steps {
		return nil, nil, 0
	}
	var lmax, lmin float64
	for p := 0; p < r.Probes; p++ {
		nodes, _ := r.probe(p)
		lmax += slices.Max(nodes)
		lmin += slices.Min(nodes)
	}
	lmax = lmax/float64(r.Probes) + margin
	lmin = lmin/float64(r.Probes) - margin
	grid = make([]float64, bins)
	floats.Span(grid, lmin, lmax)
	variance = sigma2 * math.Max(1, lmax-lmin)
	density = make([]float64, bins)
	_ = r.KernelDensity(density, grid, variance) // lengths match by construction
	if bins > 1 {
		if s := floats.Sum(density) * (grid[1] - grid[0]); s > 0 {
			floats.Scale(1/s, density)
		}
	}
	return grid, density, variance
}

// KernelDensity writes Σ wᵢ·N(x; nodeᵢ, variance) at each grid point x into
// dst: the quadrature smoothed by a Gaussian kernel, unnormalised on the
// grid (it integrates to 1 over the real line).
func (r ESDResult) KernelDensity(dst, grid []float64, variance float64) error {
	if len(dst) != len(grid) {
		return fmt.Errorf("estimators: KernelDensity: len(dst)=%d, len(grid)=%d", len(dst), len(grid))
	}
	if !(variance > 0) || math.IsInf(variance, 0) {
		return fmt.Errorf("estimators: KernelDensity: variance %g, want a positive finite number", variance)
	}
	c := 1 / math.Sqrt(2*math.Pi*variance)
	for j, x := range grid {
		var s float64
		for i, t := range r.Nodes {
			if w := r.Weights[i]; w != 0 {
				d := x - t
				s += w * math.Exp(-d*d/(2*variance))
			}
		}
		dst[j] = c * s
	}
	return nil
}
