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
	// Subspace holds directions whose exact products another estimator has
	// already paid for (SubspaceProducts[i] = H·Subspace[i]), typically the
	// ESD's Lanczos basis: the solve starts from them at no HVP cost. A
	// random Krylov basis of 30 steps already holds good approximations of
	// the extreme eigenvectors, both ends.
	Subspace, SubspaceProducts [][]float64
	// SubspaceOrthonormal promises that Subspace is orthonormal (to
	// rounding), as ESD's Lanczos basis is: it is then taken as it is.
	SubspaceOrthonormal bool
	// WarmMaxHVPs, when > 0, caps the warm (subspace) refinement: a warm
	// start that needs more has lost track of the eigenvectors, and the
	// solve restarts cold (Krylov–Schur from a random block), counting the
	// HVPs of both. By default the refinement runs to MaxHVPs.
	WarmMaxHVPs int
	// KeepBasis returns the refinement's whole orthonormal basis with its
	// exact products (EigenResult.Basis), when the solve ended there: it
	// holds the eigenvectors and every Subspace direction, a free deflation
	// space for Trace.
	KeepBasis bool
	// NoRefine warm-starts with Krylov–Schur from a combination of the
	// previous eigenvectors (round 1's method, cheaper when H moved a lot
	// relative to Tol) instead of the subspace refinement. Subspace is then
	// ignored.
	NoRefine bool
	// MinTol, when > 0, also refines the smallest Ritz pair (λmin) to
	// MinTol·‖H‖est in a warm or subspace solve. Without it λmin is reported
	// as found, with its residual.
	MinTol float64
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
	// Min is the smallest Ritz value of the final basis, λmin's estimate
	// from the same space (for the algebraic order, the other end of the
	// spectrum), and MinResidual its certificate ‖Hv−λv‖: some eigenvalue
	// lies within MinResidual of Min. Only a Residual small next to the gap
	// to the next Ritz value makes it the smallest one.
	Min, MinResidual float64
	// Refined reports that the subspace refinement (warm vectors plus
	// Subspace) converged without Krylov–Schur.
	Refined bool
	// Basis and BasisProducts are the refinement's orthonormal basis and H
	// times it (KeepBasis, refined solves only): views of the solver's
	// storage, rows back to back, not to be appended to.
	Basis, BasisProducts [][]float64
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

	var pre refineResult
	preHVPs := 0
	// The subspace refinement pays when it has a free Subspace, or for a
	// single pair (it is then Lanczos from the previous vector). For k > 1
	// previous vectors alone, Lanczos from their combination (Krylov–Schur)
	// is cheaper unless H barely moved: measured along an MNIST MLP run, a
	// probe every 2 SGD steps at tolerance 1e-4, 735 against 905 HVPs.
	refine := !opt.NoRefine && (len(opt.Subspace) > 0 || (isWarm && k == 1))
	if refine {
		// A free Subspace alone may already hold the pairs: a random
		// Krylov basis is what a cold solve would build. The previous
		// eigenvectors are paid for only when it does not.
		lazyWarm := isWarm && len(opt.Subspace) >= k
		// Tracking a single pair, the warm state also holds the vector of
		// the probe before, and Lanczos starts from the linear
		// extrapolation 2v_t − v_{t−1} of the moving eigenvector. Measured
		// along an MNIST MLP run (a probe every 2 SGD steps, tolerance
		// 1e-3), its residual on the new H is 0.011–0.026 of λ1 against
		// 0.031–0.052 for v_t; the solve then takes 4.79 HVPs on average
		// instead of 5.23 (v_t, then v_{t−1}, then residuals).
		history := isWarm && k == 1 && len(opt.Subspace) == 0 && len(warm.Vectors) > 1
		first := warm
		if history {
			first = &EigenWarm{Values: warm.Values[:1], Vectors: [][]float64{extrapolate(warm.Vectors[0], warm.Vectors[1])}}
		}
		sp, err := refineStart(ctx, op, opt, first, isWarm && !lazyWarm)
		if err != nil {
			return EigenResult{Warm: isWarm}, nil, err
		}
		if lazyWarm || history {
			pre, err = sp.refine(ctx, k, opt.Order, tol, opt.MinTol, 0, sp.m)
			if err != nil && !errors.Is(err, ErrNotConverged) {
				return EigenResult{Warm: isWarm}, nil, err
			}
			if pre.converged {
				return refinedResult(opt, pre, sp, isWarm && !lazyWarm, nil, warm)
			}
			if !history {
				if err := sp.addWarm(ctx, warm); err != nil {
					return EigenResult{Warm: isWarm, HVPs: sp.hvps}, nil, err
				}
			}
		}
		warmMax := opt.WarmMaxHVPs
		if warmMax == 0 {
			warmMax = maxHVPs
		}
		basis := min(n, max(sp.m+k+10, 4*k, 20))
		if sp.m >= k {
			pre, err = sp.refine(ctx, k, opt.Order, tol, opt.MinTol, min(warmMax, maxHVPs), basis)
			if err != nil && !errors.Is(err, ErrNotConverged) {
				return EigenResult{Warm: isWarm, HVPs: sp.hvps}, nil, err
			}
		}
		if pre.converged {
			return refinedResult(opt, pre, sp, isWarm, nil, warm)
		}
		if sp.hvps >= maxHVPs {
			return refinedResult(opt, pre, sp, isWarm, ErrNotConverged, warm)
		}
		preHVPs = sp.hvps
		switch {
		case opt.WarmMaxHVPs > 0 && sp.hvps >= opt.WarmMaxHVPs:
			// Lost track: a cold Krylov–Schur solve with what is left.
			isWarm = false
			if opt.BlockSize == 0 {
				b = min(k, 3, n)
			}
		case len(pre.vectors) == k:
			// Moved far: Krylov–Schur from the refined vectors.
			warm, isWarm = &EigenWarm{Values: pre.values, Vectors: pre.vectors}, true
			if opt.BlockSize == 0 {
				b = max(1, maxCluster(pre.values))
			}
		}
		if opt.MaxBasis == 0 {
			maxBasis = min(max(3*k, k+6*b, 30), n)
		}
	}

	rng := stream(opt.Seed, streamEigen)
	ks := newBlockKS(op, b, maxBasis, rng)
	ks.hvps = preHVPs

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
	res.Min, res.MinResidual = ks.theta[0], ks.residual(0)
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

// refineStart builds the refinement basis: the free Subspace directions
// first, then the previous eigenvectors (one HVP each).
func refineStart(ctx context.Context, op hvp.Operator, opt EigenOptions, warm *EigenWarm, isWarm bool) (*subspace, error) {
	if len(opt.SubspaceProducts) != len(opt.Subspace) {
		return nil, fmt.Errorf("estimators: %d subspace vectors with %d products", len(opt.Subspace), len(opt.SubspaceProducts))
	}
	n := op.Dim()
	sp := newSubspace(op, stream(opt.Seed, streamEigen+1))
	for i, x := range opt.Subspace {
		if len(x) != n || len(opt.SubspaceProducts[i]) != n {
			return nil, fmt.Errorf("%w: subspace vector %d", hvp.ErrDim, i)
		}
	}
	if opt.SubspaceOrthonormal {
		sp.addOrthonormal(opt.Subspace, opt.SubspaceProducts)
	} else {
		for i, x := range opt.Subspace {
			if _, err := sp.add(ctx, slices.Clone(x), slices.Clone(opt.SubspaceProducts[i])); err != nil {
				return nil, err
			}
		}
	}
	if isWarm {
		if err := sp.addWarm(ctx, warm); err != nil {
			return nil, err
		}
	}
	return sp, nil
}

// addWarm adds the previous eigenvectors (one HVP each).
func (sp *subspace) addWarm(ctx context.Context, warm *EigenWarm) error {
	for _, v := range warm.Vectors {
		if _, err := sp.add(ctx, slices.Clone(v), nil); err != nil {
			return err
		}
	}
	return nil
}

// refinedResult packages a refinement as TopEigen's result; err is nil for
// a converged one. A single tracked pair keeps prev's first vector as its
// history (see TopEigen).
func refinedResult(opt EigenOptions, r refineResult, sp *subspace, isWarm bool, err error, prev *EigenWarm) (EigenResult, *EigenWarm, error) {
	res := EigenResult{
		Values: r.values, Residuals: r.residuals, NormEstimate: sp.normEst, HVPs: sp.hvps,
		Converged: err == nil, Warm: isWarm, BlockSize: 1, Min: r.min, MinResidual: r.minResidual, Refined: true,
	}
	nw := &EigenWarm{Values: slices.Clone(r.values), Vectors: slices.Clone(r.vectors)}
	if opt.K == 1 && prev.usable(sp.n) && len(opt.Subspace) == 0 {
		nw.Values = append(nw.Values, prev.Values[0])
		nw.Vectors = append(nw.Vectors, prev.Vectors[0])
	}
	if opt.KeepVectors {
		for _, x := range r.vectors {
			res.Vectors = append(res.Vectors, slices.Clone(x))
		}
	}
	if opt.KeepProducts {
		res.Products = r.products
	}
	if opt.KeepBasis {
		// Views of the subspace's storage, which nothing changes after the
		// solve: the trace's deflation then uses it without a copy.
		for i := range sp.m {
			res.Basis = append(res.Basis, sp.s[i*sp.n:(i+1)*sp.n:sp.m*sp.n])
			res.BasisProducts = append(res.BasisProducts, sp.hs[i*sp.n:(i+1)*sp.n:sp.m*sp.n])
		}
	}
	if err != nil {
		return res, nw, fmt.Errorf("%w: %d HVPs in the warm refinement", err, sp.hvps)
	}
	return res, nw, nil
}

// extrapolate returns v + (v − u), u's sign aligned with v: the linear
// extrapolation of an eigenvector that moved from u to v over the last
// probe interval. A Hessian that drifts smoothly (progressive sharpening)
// turns its top eigenvector by a similar angle in the same direction at
// each probe.
func extrapolate(v, u []float64) []float64 {
	s := 1.0
	if floats.Dot(u, v) < 0 {
		s = -1
	}
	x := make([]float64, len(v))
	for i := range x {
		x[i] = 2*v[i] - s*u[i]
	}
	return x
}
