package estimators

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/hvp"
)

// Order selects which end of the spectrum an eigen solve targets.
type Order int

const (
	// Algebraic asks for the algebraically largest eigenvalues (λ1 ≥ λ2 ≥ …),
	// the sharpness a training monitor cares about.
	Algebraic Order = iota
	// Magnitude asks for the eigenvalues of largest |λ|, whatever their sign.
	Magnitude
)

// String returns "algebraic" or "magnitude".
func (o Order) String() string {
	switch o {
	case Algebraic:
		return "algebraic"
	case Magnitude:
		return "magnitude"
	}
	return fmt.Sprintf("Order(%d)", int(o))
}

// ParseOrder parses "algebraic" or "magnitude".
func ParseOrder(s string) (Order, error) {
	switch s {
	case "algebraic", "":
		return Algebraic, nil
	case "magnitude":
		return Magnitude, nil
	}
	return 0, fmt.Errorf("estimators: unknown order %q (want algebraic or magnitude)", s)
}

// EigenOptions configures TopEigen. The zero value of every field except K
// selects a sensible default.
type EigenOptions struct {
	// K is the number of eigenpairs wanted (required, 1 ≤ K ≤ Dim).
	K     int
	Order Order
	// Tol is the residual tolerance relative to the operator norm
	// estimate: a pair is converged when ‖Hv−λv‖ ≤ Tol·‖H‖est, where ‖H‖est
	// is the largest |Ritz value| seen (a lower bound of ‖H‖, equal to |λ1|
	// in magnitude order). Eigenvalue errors are then at most Tol·‖H‖est and
	// typically (Tol·‖H‖est)²/gap. Default 1e-6.
	Tol float64
	// MaxHVPs caps the Hessian-vector products. Default 1000.
	MaxHVPs int
	// BlockSize is the Krylov block size b. A block of size b resolves
	// eigenvalue multiplicities up to b; b = 1 is plain Lanczos, which
	// is 1.5–2× cheaper cold but sees a repeated eigenvalue only once.
	// The default is min(K, 3) cold; warm, it is the largest cluster among
	// the previous eigenvalues (so an exactly or nearly repeated eigenvalue
	// keeps its multiplicity), usually 1.
	BlockSize int
	// MaxBasis bounds the Krylov basis before a thick restart. Memory is
	// (MaxBasis+2b)·Dim floats. Default max(3K, K+6b, 30), at most Dim.
	MaxBasis int
	// Seed seeds the random start block.
	Seed uint64
	// KeepVectors returns the eigenvectors in the result. The warm state
	// always holds them.
	KeepVectors bool
	// KeepProducts returns H·v for each eigenvector, from the Krylov
	// relation at no HVP cost (exact up to ~1e-12·‖H‖). Pass them with the
	// vectors to Trace as DeflateProducts to save K HVPs.
	KeepProducts bool
}

// EigenResult holds eigenpairs with their certificates.
type EigenResult struct {
	// Values are sorted in the requested order: descending λ (Algebraic) or
	// descending |λ| (Magnitude).
	Values []float64
	// Residuals[i] = ‖H vᵢ − λᵢ vᵢ‖ with ‖vᵢ‖ = 1, so some eigenvalue of H
	// lies within Residuals[i] of Values[i] (and within Residuals[i]²/gap
	// when the others are at least gap away).
	Residuals []float64
	// Vectors are unit eigenvectors (only with KeepVectors).
	Vectors [][]float64
	// Products are H·Vectors[i] (only with KeepProducts).
	Products [][]float64
	// NormEstimate is the scale Tol was relative to.
	NormEstimate float64
	HVPs         int
	Converged    bool
	// Warm reports whether the solve started from a warm state.
	Warm      bool
	BlockSize int
	Restarts  int
}

// EigenWarm is the warm state of TopEigen: the previous eigenpairs.
type EigenWarm struct {
	Values  []float64
	Vectors [][]float64
}

func (w *EigenWarm) usable(n int) bool {
	if w == nil || len(w.Vectors) == 0 || len(w.Values) != len(w.Vectors) {
		return false
	}
	for _, v := range w.Vectors {
		if len(v) != n {
			return false
		}
	}
	return true
}

// clusterRel is the relative spacing below which previous eigenvalues count
// as one cluster when sizing the warm block.
const clusterRel = 1e-3

// maxCluster returns the size of the largest group of values whose
// neighbours lie within clusterRel·max|value| of each other.
func maxCluster(values []float64) int {
	if len(values) == 0 {
		return 0
	}
	v := slices.Clone(values)
	slices.Sort(v)
	scale := math.Max(math.Abs(v[0]), math.Abs(v[len(v)-1]))
	best, cur := 1, 1
	for i := 1; i < len(v); i++ {
		if v[i]-v[i-1] <= clusterRel*scale {
			cur++
		} else {
			cur = 1
		}
		best = max(best, cur)
	}
	return best
}

// TopEigen computes the K extreme eigenpairs of a symmetric operator by
// block Krylov–Schur iteration (thick-restart block Lanczos with full
// reorthogonalisation). It stops when every wanted pair's residual is below
// Tol·‖H‖est, or at the HVP cap, in which case it returns the best pairs
// found together with an error wrapping ErrNotConverged.
//
// Unlike power iteration it handles indefinite spectra, ±λ near-ties,
// clusters and (up to the block size) repeated eigenvalues.
//
// With a warm state from a previous call on a nearby operator, the Krylov
// space starts from the previous eigenvectors: a random combination of them
// (one block vector per member of the largest previous cluster), which
// holds every wanted direction at once, so a slightly changed H converges
// in little more than K HVPs plus the few needed to correct the change. A
// warm state of another dimension is ignored.
//
// A warm start sees new directions only through the operator's change: an
// eigenvalue that rises into the top K along a direction orthogonal to the
// previous eigenvectors and uncoupled from them can be missed, with small
// residuals on the pairs returned (they are eigenpairs, just not the top
// ones). Cold Lanczos shares this risk only at the 1/√n level of a random
// start, so a monitor should solve cold every few probes.
func TopEigen(ctx context.Context, op hvp.Operator, opt EigenOptions, warm *EigenWarm) (EigenResult, *EigenWarm, error) {
	n := op.Dim()
	if opt.K < 1 || opt.K > n {
		return EigenResult{}, nil, fmt.Errorf("estimators: K=%d, want 1 ≤ K ≤ %d", opt.K, n)
	}
	if opt.Order != Algebraic && opt.Order != Magnitude {
		return EigenResult{}, nil, fmt.Errorf("estimators: unknown order %d", opt.Order)
	}
	if opt.Tol < 0 || math.IsNaN(opt.Tol) || opt.MaxHVPs < 0 || opt.BlockSize < 0 || opt.MaxBasis < 0 {
		return EigenResult{}, nil, errors.New("estimators: negative or NaN eigen option")
	}
	k := opt.K
	tol := opt.Tol
	if tol == 0 {
		tol = 1e-6
	}
	maxHVPs := opt.MaxHVPs
	if maxHVPs == 0 {
		maxHVPs = 1000
	}
	isWarm := warm.usable(n)
	b := opt.BlockSize
	if b == 0 {
		if isWarm {
			b = max(1, maxCluster(warm.Values))
		} else {
			b = min(k, 3)
		}
	}
	b = min(b, n)
	maxBasis := opt.MaxBasis
	if maxBasis == 0 {
		maxBasis = max(3*k, k+6*b, 30)
	}
	maxBasis = min(max(maxBasis, k+2*b), n)

	rng := stream(opt.Seed, streamEigen)
	ks := newBlockKS(op, b, maxBasis, rng)

	var startBlock [][]float64
	if isWarm {
		startBlock = warmStart(warm.Vectors, b, rng)
	}
	ks.start(startBlock)

	res := EigenResult{Warm: isWarm, BlockSize: b}
	var wanted []int
	converged := false
	for {
		if ks.qb == 0 && ks.m >= k {
			// The basis spans an invariant subspace holding every
			// direction we can reach: the Ritz pairs are exact.
			converged = true
			break
		}
		if ks.qb == 0 || ks.hvps+ks.qb > maxHVPs {
			break
		}
		if ks.m+ks.qb > maxBasis {
			ks.restart(keepSet(ks.theta, opt.Order, min(ks.m-ks.qb, max(k, (maxBasis-ks.qb+k)/2))))
		}
		if err := ks.expand(ctx); err != nil {
			return res, nil, err
		}
		if err := ks.ritz(); err != nil {
			return res, nil, err
		}
		if ks.m < k {
			continue
		}
		wanted = keepSet(ks.theta, opt.Order, k)
		converged = true
		lim := tol * ks.normEst
		for _, j := range wanted {
			if ks.residual(j) > lim {
				converged = false
				break
			}
		}
		if converged {
			break
		}
	}
	if ks.m < k {
		return res, nil, fmt.Errorf("%w: HVP cap %d too small for K=%d with block size %d", ErrNotConverged, maxHVPs, k, b)
	}
	wanted = keepSet(ks.theta, opt.Order, k)

	res.Values = make([]float64, k)
	res.Residuals = make([]float64, k)
	for i, j := range wanted {
		res.Values[i] = ks.theta[j]
		res.Residuals[i] = ks.residual(j)
	}
	nw := &EigenWarm{Values: make([]float64, k), Vectors: make([][]float64, k)}
	for i, j := range wanted {
		x := make([]float64, n)
		ks.ritzVector(x, j)
		floats.Scale(1/floats.Norm(x, 2), x)
		nw.Values[i] = ks.theta[j]
		nw.Vectors[i] = x
	}
	if opt.KeepProducts {
		res.Products = make([][]float64, k)
		for i, j := range wanted {
			res.Products[i] = ks.product(nw.Vectors[i], j)
		}
	}
	if opt.KeepVectors {
		res.Vectors = make([][]float64, k)
		for i, x := range nw.Vectors {
			res.Vectors[i] = slices.Clone(x)
		}
	}
	res.NormEstimate = ks.normEst
	res.HVPs = ks.hvps
	res.Converged = converged
	res.Restarts = ks.restarts
	if !converged {
		return res, nw, fmt.Errorf("%w: %d HVPs, largest relative residual %.3g > %.3g",
			ErrNotConverged, ks.hvps, slices.Max(res.Residuals)/math.Max(ks.normEst, math.SmallestNonzeroFloat64), tol)
	}
	return res, nw, nil
}

// keepSet returns the indices of the p wanted Ritz values (theta ascending)
// in the requested order.
func keepSet(theta []float64, order Order, p int) []int {
	m := len(theta)
	p = min(p, m)
	idx := make([]int, m)
	for i := range idx {
		idx[i] = m - 1 - i // descending λ
	}
	if order == Magnitude {
		slices.SortStableFunc(idx, func(a, b int) int {
			return cmp.Compare(math.Abs(theta[b]), math.Abs(theta[a]))
		})
	}
	return idx[:p]
}

// warmStart builds b start vectors as random combinations of the previous
// eigenvectors. A single vector with equal-magnitude weights contains every
// old direction, so the Krylov space recovers all of them in about K steps;
// b > 1 random combinations additionally span a repeated eigenvalue's whole
// eigenspace.
func warmStart(old [][]float64, b int, r *rand.Rand) [][]float64 {
	n := len(old[0])
	out := make([][]float64, b)
	for l := range out {
		x := make([]float64, n)
		for _, v := range old {
			var c float64
			if b == 1 {
				c = 1
				if r.Float64() < 0.5 {
					c = -1
				}
			} else {
				c = r.NormFloat64()
			}
			floats.AddScaled(x, c, v)
		}
		out[l] = x
	}
	return out
}
