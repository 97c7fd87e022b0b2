package estimators

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

// subspace is an orthonormal basis S (rows of s) together with the exact
// products H·S (rows of hs), so that Rayleigh–Ritz over span(S) and the
// residual ‖Hx−θx‖ of every Ritz pair cost no HVPs. It is the engine of the
// warm eigen solve: the previous eigenvectors, and any Krylov basis whose
// products another estimator already paid for (the ESD's Lanczos), go in
// first; residual directions are added while pairs are unconverged
// (Davidson's method without a preconditioner).
type subspace struct {
	op   hvp.Operator
	n    int
	s    []float64 // m×n
	hs   []float64 // m×n
	g    []float64 // Sᵀ H S, m×m row-major (kept symmetric)
	m    int
	hvps int

	coef []float64
	eig  mat.EigenSym
	// Ritz values ascending and vectors (columns of y) of the last rr.
	theta   []float64
	y       *mat.Dense
	normEst float64
	rng     *rand.Rand // signs of combined residual directions

	// reserve is the row count the basis storage grows to at once when it
	// must grow (the refinement's largest basis), so that appending never
	// reallocates twice; hx is the product scratch of add.
	reserve int
	hx      []float64
}

func newSubspace(op hvp.Operator, rng *rand.Rand) *subspace {
	return &subspace{op: op, n: op.Dim(), y: &mat.Dense{}, rng: rng}
}

// grow makes room for p more rows in s and hs, reallocating (to reserve
// rows, or what is needed) only when their capacity is short.
func (sp *subspace) grow(p int) {
	n, need := sp.n, sp.m+p
	if cap(sp.s) >= need*n && cap(sp.hs) >= need*n {
		return
	}
	rows := max(need, sp.reserve)
	s := make([]float64, sp.m*n, rows*n)
	copy(s, sp.s[:sp.m*n])
	hs := make([]float64, sp.m*n, rows*n)
	copy(hs, sp.hs[:sp.m*n])
	sp.s, sp.hs = s, hs
}

func (sp *subspace) row(i int) []float64  { return sp.s[i*sp.n : (i+1)*sp.n] }
func (sp *subspace) hrow(i int) []float64 { return sp.hs[i*sp.n : (i+1)*sp.n] }

// addOrthonormal appends vectors that are orthonormal among themselves and
// to the basis (a Lanczos basis with full reorthogonalisation is), with
// their exact products, computing the new part of G with one GEMM instead
// of Gram–Schmidt and dot products.
func (sp *subspace) addOrthonormal(xs, hxs [][]float64) {
	m0, p := sp.m, len(xs)
	if p == 0 {
		return
	}
	// An empty basis adopts vectors that lie back to back (the ESD's
	// Lanczos storage) without copying them; later appends fill the
	// storage's spare room in place, and copy only past it.
	xc, hxc := contiguous(xs, sp.n), contiguous(hxs, sp.n)
	if m0 == 0 && xc != nil && hxc != nil {
		sp.s, sp.hs = xc, hxc
	} else {
		sp.grow(p)
		for i := range xs {
			sp.s = append(sp.s, xs[i]...)
			sp.hs = append(sp.hs, hxs[i]...)
		}
	}
	m := m0 + p
	n := sp.n
	full := make([]float64, m*m)
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, blas64.General{Rows: m, Cols: n, Stride: n, Data: sp.s[:m*n]},
		blas64.General{Rows: m, Cols: n, Stride: n, Data: sp.hs[:m*n]}, 0, blas64.General{Rows: m, Cols: m, Stride: m, Data: full})
	g := make([]float64, m*m)
	for i := 0; i < m; i++ {
		for j := i; j < m; j++ {
			v := (full[i*m+j] + full[j*m+i]) / 2
			if i < m0 && j < m0 {
				v = sp.g[i*m0+j]
			}
			g[i*m+j], g[j*m+i] = v, v
		}
	}
	sp.g, sp.m = g, m
}

// add orthogonalises x against the basis and appends it when enough of it
// is new. hx, when not nil, is the exact product H·x (it is transformed with
// x, so it stays exact by linearity); otherwise one HVP computes it. x and
// hx are overwritten. It reports whether x was added.
func (sp *subspace) add(ctx context.Context, x, hx []float64) (bool, error) {
	n0 := floats.Norm(x, 2)
	if !(n0 > 0) || math.IsInf(n0, 0) {
		return false, nil
	}
	if len(sp.coef) < sp.m {
		sp.coef = make([]float64, sp.m+16)
	}
	c := sp.coef[:sp.m]
	clear(c)
	nrm := n0
	if sp.m > 0 {
		basis := blas64.General{Rows: sp.m, Cols: sp.n, Stride: sp.n, Data: sp.s[:sp.m*sp.n]}
		tmp := make([]float64, sp.m)
		for pass := 0; pass < 5; pass++ {
			blas64.Gemv(blas.NoTrans, 1, basis, vec(x), 0, vec(tmp))
			blas64.Gemv(blas.Trans, -1, basis, vec(tmp), 1, vec(x))
			floats.Add(c, tmp)
			prev := nrm
			nrm = floats.Norm(x, 2)
			if pass >= 1 && nrm > prev/math.Sqrt2 {
				break
			}
		}
	}
	// A direction that is all but inside the basis adds nothing but
	// rounding error.
	if nrm <= 1e-10*n0 {
		return false, nil
	}
	floats.Scale(1/nrm, x)
	if hx != nil {
		for i, ci := range c {
			floats.AddScaled(hx, -ci, sp.hrow(i))
		}
		floats.Scale(1/nrm, hx)
	} else {
		if sp.hx == nil {
			sp.hx = make([]float64, sp.n)
		}
		hx = sp.hx
		if err := hvp.ApplyContext(ctx, sp.op, hx, x); err != nil {
			return false, fmt.Errorf("estimators: Hessian-vector product: %w", err)
		}
		sp.hvps++
		if !finite(hx) {
			return false, ErrNonFinite
		}
	}
	m := sp.m
	sp.grow(1)
	sp.s = append(sp.s, x...)
	sp.hs = append(sp.hs, hx...)
	// Grow G by one row and column: G[i,m] = s_iᵀ H x, symmetrised with
	// xᵀ H s_i so that rounding keeps it symmetric.
	g := make([]float64, (m+1)*(m+1))
	for i := 0; i < m; i++ {
		copy(g[i*(m+1):i*(m+1)+m], sp.g[i*m:(i+1)*m])
	}
	for i := 0; i < m; i++ {
		v := (floats.Dot(sp.row(i), hx) + floats.Dot(x, sp.hrow(i))) / 2
		g[i*(m+1)+m], g[m*(m+1)+i] = v, v
	}
	g[m*(m+1)+m] = floats.Dot(x, hx)
	sp.g, sp.m = g, m+1
	return true, nil
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func finite(x []float64) bool {
	for _, v := range x {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// rr computes the Ritz values (ascending) and vectors of H on the basis.
func (sp *subspace) rr() error {
	if sp.m == 0 {
		return errors.New("estimators: Rayleigh–Ritz on an empty basis")
	}
	a := mat.NewSymDense(sp.m, nil)
	for i := 0; i < sp.m; i++ {
		for j := i; j < sp.m; j++ {
			a.SetSym(i, j, sp.g[i*sp.m+j])
		}
	}
	if !sp.eig.Factorize(a, true) {
		return errors.New("estimators: eigendecomposition of the projected matrix failed")
	}
	sp.theta = sp.eig.Values(nil)
	sp.y.Reset()
	sp.eig.VectorsTo(sp.y)
	for _, t := range sp.theta {
		sp.normEst = math.Max(sp.normEst, math.Abs(t))
	}
	return nil
}

// invariant reports whether H maps the basis into itself to working
// precision: ‖HS − S(SᵀHS)‖_F ≤ breakRel·‖H‖est·√m.
func (sp *subspace) invariant() bool {
	m, n := sp.m, sp.n
	// For orthonormal S, ‖HS − GS‖²_F = ‖HS‖²_F − ‖G‖²_F: one pass over HS
	// and no copy tells a basis that is far from invariant (the usual
	// case) without the GEMM below. The margin is far above the rounding
	// of the difference and far below any defect that is not rounding.
	var hs2, g2 float64
	for i := range m {
		h := sp.hrow(i)
		hs2 += floats.Dot(h, h)
	}
	for _, v := range sp.g[:m*m] {
		g2 += v * v
	}
	if hs2-g2 > 1e-8*hs2 {
		return false
	}
	r := slices.Clone(sp.hs[:m*n])
	s := blas64.General{Rows: m, Cols: n, Stride: n, Data: sp.s[:m*n]}
	g := blas64.General{Rows: m, Cols: m, Stride: m, Data: sp.g}
	blas64.Gemm(blas.NoTrans, blas.NoTrans, -1, g, s, 1, blas64.General{Rows: m, Cols: n, Stride: n, Data: r})
	return floats.Norm(r, 2) <= breakRel*math.Max(sp.normEst, math.SmallestNonzeroFloat64)*math.Sqrt(float64(m))*10
}

// pairs writes the Ritz vectors js and their exact products into the rows
// of x and hx (len(js)×n each) and the residuals ‖Hx − θx‖ into res: two
// GEMMs, one pass over S and one over HS for all of them, instead of two
// GEMVs per pair.
func (sp *subspace) pairs(x, hx []float64, js []int, res []float64) {
	m, n, p := sp.m, sp.n, len(js)
	if p == 0 {
		return
	}
	yk := make([]float64, m*p)
	for i := range m {
		for l, j := range js {
			yk[i*p+l] = sp.y.At(i, j)
		}
	}
	y := blas64.General{Rows: m, Cols: p, Stride: p, Data: yk}
	s := blas64.General{Rows: m, Cols: n, Stride: n, Data: sp.s[:m*n]}
	hs := blas64.General{Rows: m, Cols: n, Stride: n, Data: sp.hs[:m*n]}
	blas64.Gemm(blas.Trans, blas.NoTrans, 1, y, s, 0, blas64.General{Rows: p, Cols: n, Stride: n, Data: x[:p*n]})
	blas64.Gemm(blas.Trans, blas.NoTrans, 1, y, hs, 0, blas64.General{Rows: p, Cols: n, Stride: n, Data: hx[:p*n]})
	for l, j := range js {
		xl, hl := x[l*n:(l+1)*n], hx[l*n:(l+1)*n]
		var ss float64
		t := sp.theta[j]
		for i := range xl {
			r := hl[i] - t*xl[i]
			ss += r * r
		}
		res[l] = math.Sqrt(ss)
	}
}

// restart replaces the basis by the Ritz vectors keep (with their
// products), which are orthonormal: no HVPs.
func (sp *subspace) restart(keep []int) {
	p := len(keep)
	s := make([]float64, p*sp.n)
	hs := make([]float64, p*sp.n)
	g := make([]float64, p*p)
	sp.pairs(s, hs, keep, make([]float64, p))
	for l, j := range keep {
		g[l*p+l] = sp.theta[j]
	}
	sp.s, sp.hs, sp.g, sp.m = s, hs, g, p
}

// blockRoundFactor: residuals above this multiple of the tolerance need
// more than one correction each.
const blockRoundFactor = 30

// refineResult is what refine reached.
type refineResult struct {
	values, residuals []float64
	vectors, products [][]float64
	// min is the smallest Ritz value of the final basis with its vector's
	// residual: λmin's estimate from the same space.
	min, minResidual float64
	converged        bool
}

// refineRun is one refine call's state: its targets, the Ritz pairs of the
// last round in one reused buffer (wanted pairs, then λmin's), and how far
// the rounds have gone.
type refineRun struct {
	k              int
	order          Order
	tol, minTol    float64
	maxHVPs, basis int

	x, hx      []float64 // (k+1)×n: the wanted Ritz vectors, then λmin's
	res        []float64
	round      int
	randomised bool
}

// refine runs Rayleigh–Ritz on the basis and adds the residuals of the
// wanted pairs that are not yet within tol·‖H‖est, until all are or the
// basis has spent maxHVPs products in total. The basis is restarted to the
// wanted pairs (plus a few) when it would exceed maxBasis.
//
// With minTol > 0 the smallest Ritz pair is refined too, to minTol·‖H‖est.
func (sp *subspace) refine(ctx context.Context, k int, order Order, tol, minTol float64, maxHVPs, maxBasis int) (refineResult, error) {
	rn := &refineRun{k: k, order: order, tol: tol, minTol: minTol, maxHVPs: maxHVPs, basis: maxBasis,
		x: make([]float64, (k+1)*sp.n), hx: make([]float64, (k+1)*sp.n), res: make([]float64, k+1)}
	var res refineResult
	for {
		if err := sp.rr(); err != nil {
			return res, err
		}
		if sp.m < k {
			return res, fmt.Errorf("%w: the basis has %d directions, %d wanted", ErrNotConverged, sp.m, k)
		}
		wanted := keepSet(sp.theta, order, k)
		var open []int
		var refineMin bool
		res, open, refineMin = sp.ritzRound(rn, wanted)
		if len(open) == 0 && !refineMin {
			again, err := sp.reopen(ctx, rn)
			if err != nil {
				return res, err
			}
			if again {
				continue
			}
			res.converged = true
			return res, nil
		}
		dirs := len(open)
		if refineMin {
			dirs++
		}
		lim := tol * sp.normEst
		if rn.round > 0 || slices.ContainsFunc(open, func(i int) bool { return res.residuals[i] > blockRoundFactor*lim }) {
			dirs = 1
		}
		if sp.hvps+dirs > maxHVPs {
			return res, nil
		}
		if sp.m+dirs > maxBasis {
			keep := keepSet(sp.theta, order, min(sp.m, k+max(2, (maxBasis-k)/3)))
			if order == Algebraic && keep[len(keep)-1] != 0 {
				keep = append(keep, 0) // keep λmin's direction too
			}
			sp.restart(keep)
			if err := sp.rr(); err != nil {
				return res, err
			}
			// The wanted pairs are unchanged by the restart: recompute
			// their residual directions below from the same vectors.
		}
		added, err := sp.addResiduals(ctx, rn, res, open, refineMin, lim)
		if err != nil {
			return res, err
		}
		if added == 0 {
			// Every residual lies in the basis: it is invariant to working
			// precision and the pairs are as good as they get.
			return res, nil
		}
	}
}

// ritzRound computes the wanted Ritz pairs and λmin's with their
// residuals, and returns them with the indices (into wanted) of the pairs
// above tolerance and whether λmin still needs refining.
func (sp *subspace) ritzRound(rn *refineRun, wanted []int) (res refineResult, open []int, refineMin bool) {
	k, n := rn.k, sp.n
	js := append(slices.Clone(wanted), 0)
	sp.pairs(rn.x, rn.hx, js, rn.res)
	res.values = make([]float64, k)
	res.residuals = make([]float64, k)
	res.vectors = make([][]float64, k)
	res.products = make([][]float64, k)
	lim := rn.tol * sp.normEst
	for i, j := range wanted {
		res.values[i], res.residuals[i] = sp.theta[j], rn.res[i]
		res.vectors[i], res.products[i] = rn.x[i*n:(i+1)*n:(i+1)*n], rn.hx[i*n:(i+1)*n:(i+1)*n]
		if rn.res[i] > lim {
			open = append(open, i)
		}
	}
	res.min, res.minResidual = sp.theta[0], rn.res[k]
	refineMin = rn.minTol > 0 && res.minResidual > rn.minTol*sp.normEst && !contains(wanted, 0)
	return res, open, refineMin
}

// reopen handles a round in which every pair converged. An invariant basis
// (a Krylov space that closed, as for a low-rank H) sees a repeated
// eigenvalue once: the wanted pairs are eigenpairs but maybe not the
// wanted ones. Random directions reopen it, once; reopen reports whether
// it added any.
func (sp *subspace) reopen(ctx context.Context, rn *refineRun) (bool, error) {
	if rn.randomised || sp.m >= sp.n || !sp.invariant() {
		return false, nil
	}
	rn.randomised = true
	added := 0
	for range min(rn.k, sp.n-sp.m) {
		x := make([]float64, sp.n)
		gaussian(x, sp.rng)
		ok, err := sp.add(ctx, x, nil)
		if err != nil {
			return false, err
		}
		if ok {
			added++
		}
	}
	return added > 0, nil
}

// addResiduals adds the residual directions of the open pairs (and of
// λmin's with refineMin) to the basis, one HVP each, and returns how many
// were new. One block round of residuals pays when each pair needs about
// one correction (its residual within a small factor of the tolerance);
// otherwise single directions from the start.
func (sp *subspace) addResiduals(ctx context.Context, rn *refineRun, res refineResult, open []int, refineMin bool, lim float64) (int, error) {
	n := sp.n
	var resid [][]float64
	for _, i := range open {
		r := make([]float64, n)
		floats.AddScaledTo(r, res.products[i], -res.values[i], res.vectors[i])
		resid = append(resid, r)
	}
	if refineMin {
		r := make([]float64, n)
		k := rn.k
		floats.AddScaledTo(r, rn.hx[k*n:(k+1)*n], -res.min, rn.x[k*n:(k+1)*n])
		resid = append(resid, r)
	}
	if rn.round == 0 && len(resid) > 1 {
		for _, i := range open {
			if res.residuals[i] > blockRoundFactor*lim {
				rn.round = 1
				break
			}
		}
	}
	if rn.round > 0 && len(resid) > 1 {
		// After one block round, one direction per round: a random
		// combination of the normalised residuals holds every one of
		// them, so the basis grows as a single-vector Krylov space
		// (Lanczos from a combination, the cheapest per HVP when many
		// rounds are needed) instead of a block one.
		c := make([]float64, n)
		for _, r := range resid {
			w := 1.0 // unnormalised: the worst residuals dominate
			if sp.rng.Float64() < 0.5 {
				w = -w
			}
			floats.AddScaled(c, w, r)
		}
		resid = [][]float64{c}
	}
	rn.round++
	added := 0
	for _, r := range resid {
		ok, err := sp.add(ctx, r, nil)
		if err != nil {
			return added, err
		}
		if ok {
			added++
		}
	}
	return added, nil
}

// contiguous returns rows as one row-major len(rows)×n slice, without
// copying, when they already lie back to back in one array; else nil. The
// result keeps the array's capacity past the last row, so appending to it
// writes there (the ESD leaves that room for the eigen solve).
func contiguous(rows [][]float64, n int) []float64 {
	k := len(rows)
	if k == 0 || n == 0 || len(rows[0]) != n || cap(rows[0]) < k*n {
		return nil
	}
	all := rows[0][:k*n]
	for i, r := range rows {
		if len(r) != n || &r[0] != &all[i*n] {
			return nil
		}
	}
	return all
}
