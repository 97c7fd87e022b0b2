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
	"github.com/hessmon/hessmon/internal/krylov"
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
	// WarmMaxHVPs, when > 0, caps the warm (subspace) refinement: a warm
	// start that needs more has lost track of the eigenvectors, and the
	// solve restarts cold (Krylov–Schur from a random block), counting the
	// HVPs of both. By default the refinement runs to MaxHVPs.
	WarmMaxHVPs int
	// KeepBasis returns the refinement's whole orthonormal basis with its
	// exact products (EigenResult.Basis), when the solve ended there: it
	// holds the eigenvectors and every Start direction, a free deflation
	// space for Trace.
	KeepBasis bool
	// MinTol, when > 0, also refines the smallest Ritz pair (λmin) to
	// MinTol·‖H‖est in a warm or subspace solve. Without it λmin is reported
	// as found, with its residual.
	MinTol float64
	// Start is hessmon's own pipeline's (monitor.Analyze, the benchmarks):
	// a Krylov space whose products another estimator already paid for,
	// and round 1's warm start for comparisons. Its type is internal; nil,
	// the default, is the documented solve.
	Start *krylov.Start
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

func (w *EigenWarm) vectors() [][]float64 {
	if w == nil {
		return nil
	}
	return w.Vectors
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
	p, err := newEigenPlan(op.Dim(), opt, warm)
	if err != nil {
		return EigenResult{}, nil, err
	}
	if p.refine {
		res, nw, err, done := p.refineStage(ctx, op, opt, warm)
		if done {
			return res, nw, err
		}
		warm = p.warm
	}
	return p.krylovSchur(ctx, op, opt, warm)
}

// eigenPlan is a TopEigen call's options with their defaults filled in and
// what the refinement stage left for Krylov–Schur.
type eigenPlan struct {
	n, k           int
	tol            float64
	maxHVPs        int
	b, maxBasis    int
	isWarm, refine bool
	start          krylov.Start
	preHVPs        int
	warm           *EigenWarm // the Krylov–Schur start after the refinement
}

// newEigenPlan validates opt and fills in its defaults.
func newEigenPlan(n int, opt EigenOptions, warm *EigenWarm) (*eigenPlan, error) {
	if opt.K < 1 || opt.K > n {
		return nil, fmt.Errorf("estimators: K=%d, want 1 ≤ K ≤ %d", opt.K, n)
	}
	if opt.Order != Algebraic && opt.Order != Magnitude {
		return nil, fmt.Errorf("estimators: unknown order %d", opt.Order)
	}
	if opt.Tol < 0 || math.IsNaN(opt.Tol) || opt.MaxHVPs < 0 || opt.BlockSize < 0 || opt.MaxBasis < 0 {
		return nil, errors.New("estimators: negative or NaN eigen option")
	}
	p := &eigenPlan{n: n, k: opt.K, tol: opt.Tol, maxHVPs: opt.MaxHVPs, isWarm: warm.usable(n)}
	if opt.Start != nil {
		p.start = *opt.Start
	}
	if p.tol == 0 {
		p.tol = 1e-6
	}
	if p.maxHVPs == 0 {
		p.maxHVPs = 1000
	}
	p.b = opt.BlockSize
	if p.b == 0 {
		if p.isWarm {
			p.b = max(1, maxCluster(warm.Values))
		} else {
			p.b = min(p.k, 3)
		}
	}
	p.b = min(p.b, n)
	p.maxBasis = opt.MaxBasis
	if p.maxBasis == 0 {
		p.maxBasis = max(3*p.k, p.k+6*p.b, 30)
	}
	p.maxBasis = min(max(p.maxBasis, p.k+2*p.b), n)
	// The subspace refinement pays when it has a free Start basis, or for
	// a single pair (it is then Lanczos from the previous vector). For k > 1
	// previous vectors alone, Lanczos from their combination (Krylov–Schur)
	// is cheaper unless H barely moved: measured along an MNIST MLP run, a
	// probe every 2 SGD steps at tolerance 1e-4, 735 against 905 HVPs.
	p.refine = !p.start.NoRefine && (len(p.start.Basis) > 0 || (p.isWarm && p.k == 1))
	return p, nil
}

// refineStage runs the subspace refinement. It returns done with the
// result when the refinement settled the solve (converged, out of budget
// or failed); otherwise it leaves in p the Krylov–Schur start (warm from
// the refined vectors, or cold when the warm start lost track).
func (p *eigenPlan) refineStage(ctx context.Context, op hvp.Operator, opt EigenOptions, warm *EigenWarm) (EigenResult, *EigenWarm, error, bool) {
	k, isWarm := p.k, p.isWarm
	// A free Start basis alone may already hold the pairs: a random
	// Krylov basis is what a cold solve would build. The previous
	// eigenvectors are paid for only when it does not.
	lazyWarm := isWarm && len(p.start.Basis) >= k
	// Tracking a single pair, the warm state also holds the vector of the
	// probe before, and Lanczos starts from the linear extrapolation
	// 2v_t − v_{t−1} of the moving eigenvector. Measured along an MNIST
	// MLP run (a probe every 2 SGD steps, tolerance 1e-3), its residual on
	// the new H is 0.011–0.026 of λ1 against 0.031–0.052 for v_t; the
	// solve then takes 4.79 HVPs on average instead of 5.23 (v_t, then
	// v_{t−1}, then residuals).
	history := isWarm && k == 1 && len(p.start.Basis) == 0 && len(warm.Vectors) > 1
	first := warm
	if history {
		first = &EigenWarm{Values: warm.Values[:1], Vectors: [][]float64{extrapolate(warm.Vectors[0], warm.Vectors[1])}}
	}
	sp, err := refineStart(ctx, op, opt, p.start, first, isWarm && !lazyWarm)
	if err != nil {
		return EigenResult{Warm: isWarm}, nil, err, true
	}
	var pre refineResult
	if lazyWarm || history {
		pre, err = sp.refine(ctx, k, opt.Order, p.tol, opt.MinTol, 0, sp.m)
		if err != nil && !errors.Is(err, ErrNotConverged) {
			return EigenResult{Warm: isWarm}, nil, err, true
		}
		if pre.converged {
			res, nw, err := refinedResult(opt, pre, sp, isWarm && !lazyWarm, nil, warm)
			return res, nw, err, true
		}
		if !history {
			if err := sp.addWarm(ctx, warm); err != nil {
				return EigenResult{Warm: isWarm, HVPs: sp.hvps}, nil, err, true
			}
		}
	}
	warmMax := opt.WarmMaxHVPs
	if warmMax == 0 {
		warmMax = p.maxHVPs
	}
	basis := min(p.n, max(sp.m+k+10, 4*k, 20))
	if sp.m >= k {
		pre, err = sp.refine(ctx, k, opt.Order, p.tol, opt.MinTol, min(warmMax, p.maxHVPs), basis)
		if err != nil && !errors.Is(err, ErrNotConverged) {
			return EigenResult{Warm: isWarm, HVPs: sp.hvps}, nil, err, true
		}
	}
	if pre.converged {
		res, nw, err := refinedResult(opt, pre, sp, isWarm, nil, warm)
		return res, nw, err, true
	}
	if sp.hvps >= p.maxHVPs {
		res, nw, err := refinedResult(opt, pre, sp, isWarm, ErrNotConverged, warm)
		return res, nw, err, true
	}
	p.preHVPs = sp.hvps
	p.warm = warm
	switch {
	case opt.WarmMaxHVPs > 0 && sp.hvps >= opt.WarmMaxHVPs:
		// Lost track: a cold Krylov–Schur solve with what is left.
		p.isWarm = false
		if opt.BlockSize == 0 {
			p.b = min(k, 3, p.n)
		}
	case len(pre.vectors) == k:
		// Moved far: Krylov–Schur from the refined vectors.
		p.warm, p.isWarm = &EigenWarm{Values: pre.values, Vectors: pre.vectors}, true
		if opt.BlockSize == 0 {
			p.b = max(1, maxCluster(pre.values))
		}
	}
	if opt.MaxBasis == 0 {
		p.maxBasis = min(max(3*k, k+6*p.b, 30), p.n)
	}
	return EigenResult{}, nil, nil, false
}

// krylovSchur runs block Krylov–Schur from warm's vectors (p.isWarm) or a
// random block until the wanted pairs converge or the budget ends.
func (p *eigenPlan) krylovSchur(ctx context.Context, op hvp.Operator, opt EigenOptions, warm *EigenWarm) (EigenResult, *EigenWarm, error) {
	k := p.k
	rng := stream(opt.Seed, streamEigen)
	ks := newBlockKS(op, p.b, p.maxBasis, rng)
	ks.hvps = p.preHVPs
	var startBlock [][]float64
	if p.isWarm {
		startBlock = warmStart(warm.Vectors, p.b, rng)
	}
	ks.start(startBlock)
	res := EigenResult{Warm: p.isWarm, BlockSize: p.b}
	converged := false
	for {
		if ks.qb == 0 && ks.m >= k {
			// The basis spans an invariant subspace holding every
			// direction we can reach: the Ritz pairs are exact.
			converged = true
			break
		}
		if ks.qb == 0 || ks.hvps+ks.qb > p.maxHVPs {
			break
		}
		if ks.m+ks.qb > p.maxBasis {
			ks.restart(keepSet(ks.theta, opt.Order, min(ks.m-ks.qb, max(k, (p.maxBasis-ks.qb+k)/2))))
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
		if converged = ks.converged(keepSet(ks.theta, opt.Order, k), p.tol*ks.normEst); converged {
			break
		}
	}
	if ks.m < k {
		return res, nil, fmt.Errorf("%w: HVP cap %d too small for K=%d with block size %d", ErrNotConverged, p.maxHVPs, k, p.b)
	}
	return ks.result(res, opt, p.tol, converged)
}

// converged reports whether every wanted pair's residual is within lim.
func (k *blockKS) converged(wanted []int, lim float64) bool {
	for _, j := range wanted {
		if k.residual(j) > lim {
			return false
		}
	}
	return true
}

// result packages the wanted Ritz pairs of the final basis.
func (k *blockKS) result(res EigenResult, opt EigenOptions, tol float64, converged bool) (EigenResult, *EigenWarm, error) {
	wanted := keepSet(k.theta, opt.Order, opt.K)
	n := k.n
	res.Values = make([]float64, len(wanted))
	res.Residuals = make([]float64, len(wanted))
	nw := &EigenWarm{Values: make([]float64, len(wanted)), Vectors: make([][]float64, len(wanted))}
	for i, j := range wanted {
		res.Values[i] = k.theta[j]
		res.Residuals[i] = k.residual(j)
		x := make([]float64, n)
		k.ritzVector(x, j)
		floats.Scale(1/floats.Norm(x, 2), x)
		nw.Values[i] = k.theta[j]
		nw.Vectors[i] = x
	}
	if opt.KeepProducts {
		res.Products = make([][]float64, len(wanted))
		for i, j := range wanted {
			res.Products[i] = k.product(nw.Vectors[i], j)
		}
	}
	if opt.KeepVectors {
		res.Vectors = make([][]float64, len(wanted))
		for i, x := range nw.Vectors {
			res.Vectors[i] = slices.Clone(x)
		}
	}
	res.NormEstimate = k.normEst
	res.HVPs = k.hvps
	res.Converged = converged
	res.Restarts = k.restarts
	res.Min, res.MinResidual = k.theta[0], k.residual(0)
	if !converged {
		return res, nw, fmt.Errorf("%w: %d HVPs, largest relative residual %.3g > %.3g",
			ErrNotConverged, k.hvps, slices.Max(res.Residuals)/math.Max(k.normEst, math.SmallestNonzeroFloat64), tol)
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

// refineStart builds the refinement basis: the free Start directions
// first, then the previous eigenvectors (one HVP each).
func refineStart(ctx context.Context, op hvp.Operator, opt EigenOptions, st krylov.Start, warm *EigenWarm, isWarm bool) (*subspace, error) {
	if len(st.Products) != len(st.Basis) {
		return nil, fmt.Errorf("estimators: %d subspace vectors with %d products", len(st.Basis), len(st.Products))
	}
	n := op.Dim()
	sp := newSubspace(op, stream(opt.Seed, streamEigen+1))
	// The largest basis refineStage asks for, plus the warm vectors.
	sp.reserve = min(n, max(len(st.Basis)+opt.K+10, 4*opt.K, 20)+len(warm.vectors()))
	for i, x := range st.Basis {
		if len(x) != n || len(st.Products[i]) != n {
			return nil, fmt.Errorf("%w: subspace vector %d", hvp.ErrDim, i)
		}
	}
	if st.Orthonormal {
		sp.addOrthonormal(st.Basis, st.Products)
	} else {
		for i, x := range st.Basis {
			if _, err := sp.add(ctx, slices.Clone(x), slices.Clone(st.Products[i])); err != nil {
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
	if opt.K == 1 && prev.usable(sp.n) && (opt.Start == nil || len(opt.Start.Basis) == 0) {
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
