package estimators

import (
	"context"
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/hvp"
)

// PowerOptions configures PowerIteration. Defaults are PyHessian's.
type PowerOptions struct {
	K       int     // eigenvalues wanted, default 1
	MaxIter int     // iterations per eigenvalue, default 100
	Tol     float64 // relative change that stops an iteration, default 1e-3
	Seed    uint64
	// KeepVectors returns the vectors in the result.
	KeepVectors bool
}

// PowerIteration reproduces PyHessian's hessian.eigenvalues: for each of K
// eigenvalues, power iteration from a Gaussian vector, orthogonalised
// against the vectors found so far, stopped when the Rayleigh quotient
// changes by less than Tol relative (|Δλ|/(|λ|+1e-6)) or after MaxIter HVPs.
//
// It exists to compare against TopEigen. Its weaknesses are PyHessian's:
// the stopping rule leaves λ1 biased low, it never converges when the two
// largest-magnitude eigenvalues are near ±λ (it returns a value that is no
// eigenvalue), it targets magnitude rather than algebraic order, and
// deflated values come back in discovery order, unsorted. Unlike PyHessian,
// each value carries its residual ‖Hv−λv‖, which exposes these failures; it
// is the residual of the vector whose Rayleigh quotient is the value (the
// last iterate before normalising H·v; PyHessian returns normalised H·v),
// so it costs no extra HVP. Converged reports whether every eigenvalue met
// the relative-change rule, not its residual.
func PowerIteration(ctx context.Context, op hvp.Operator, opt PowerOptions) (EigenResult, error) {
	n := op.Dim()
	k := opt.K
	if k == 0 {
		k = 1
	}
	if k < 0 || k > n || opt.MaxIter < 0 || opt.Tol < 0 || math.IsNaN(opt.Tol) {
		return EigenResult{}, fmt.Errorf("estimators: bad power-iteration options %+v for dimension %d", opt, n)
	}
	maxIter := opt.MaxIter
	if maxIter == 0 {
		maxIter = 100
	}
	tol := opt.Tol
	if tol == 0 {
		tol = 1e-3
	}
	rng := stream(opt.Seed, streamPower)
	res := EigenResult{Converged: true, BlockSize: 1}
	found := make([][]float64, 0, k)
	hv := make([]float64, n)
	var vectors [][]float64
	for len(found) < k {
		v := make([]float64, n)
		gaussian(v, rng)
		floats.Scale(1/floats.Norm(v, 2), v)
		next := make([]float64, n)
		var lambda, resid float64
		have, stopped := false, false
		for it := 0; it < maxIter; it++ {
			for _, u := range found {
				floats.AddScaled(v, -floats.Dot(u, v), u)
			}
			nv := floats.Norm(v, 2)
			if nv == 0 {
				return res, errors.New("estimators: power iteration vector vanished after deflation")
			}
			floats.Scale(1/nv, v)
			if err := hvp.ApplyContext(ctx, op, hv, v); err != nil {
				return res, fmt.Errorf("estimators: Hessian-vector product: %w", err)
			}
			res.HVPs++
			tmp := floats.Dot(hv, v)
			if math.IsNaN(tmp) || math.IsInf(tmp, 0) {
				return res, ErrNonFinite
			}
			res.NormEstimate = math.Max(res.NormEstimate, math.Abs(tmp))
			// The residual of (tmp, v), the pair PyHessian's value belongs to.
			var ss float64
			for i := range hv {
				d := hv[i] - tmp*v[i]
				ss += d * d
			}
			resid = math.Sqrt(ss)
			// PyHessian moves on to normalised H·v before testing.
			copy(next, hv)
			if nh := floats.Norm(next, 2); nh > 0 {
				floats.Scale(1/nh, next)
			} else {
				copy(next, v) // H v = 0: v is a null vector
			}
			change := math.Inf(1)
			if have {
				change = math.Abs(lambda-tmp) / (math.Abs(lambda) + 1e-6)
			}
			lambda, have = tmp, true
			if change < tol {
				stopped = true
				break
			}
			v, next = next, v
		}
		if !stopped {
			res.Converged = false
			// v and next were swapped after the last product; undo it so
			// that v is the vector lambda and resid belong to.
			v, next = next, v
		}
		res.Values = append(res.Values, lambda)
		res.Residuals = append(res.Residuals, resid)
		vectors = append(vectors, v)
		found = append(found, next)
	}
	if opt.KeepVectors {
		res.Vectors = vectors
	}
	return res, nil
}
