package estimators

import (
	"context"
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

// streamExtremes keeps Extremes' random vectors apart from TopEigen's.
const streamExtremes = streamEigen | 0x45

// ExtremesOptions configures Extremes.
type ExtremesOptions struct {
	// Tol is the relative residual: both ends stop when
	// ‖Hy−θy‖ ≤ Tol·max(|θmax|, |θmin|). Default 1e-3.
	Tol float64
	// MaxHVPs caps the products (default 200).
	MaxHVPs int
	// MaxBasis is the basis size past which the solve restarts thick,
	// keeping the extreme Ritz vectors and the previous ones (default 14).
	MaxBasis int
	// WarmMaxHVPs is the number of warm products after which a random
	// vector joins the basis, in case the warm vectors lost their
	// eigenvalue to another one (default 10).
	WarmMaxHVPs int
	Seed        uint64
}

func (o ExtremesOptions) withDefaults() ExtremesOptions {
	if o.Tol == 0 {
		o.Tol = 1e-3
	}
	if o.MaxHVPs == 0 {
		o.MaxHVPs = 200
	}
	if o.MaxBasis == 0 {
		o.MaxBasis = 14
	}
	if o.WarmMaxHVPs == 0 {
		o.WarmMaxHVPs = 10
	}
	return o
}

// ExtremesResult holds both ends of the spectrum with their certificates:
// some eigenvalue of H lies within MaxResidual of MaxValue (and within
// MaxResidual²/gap when the others are gap away), and likewise for Min.
type ExtremesResult struct {
	MaxValue, MaxResidual float64
	MinValue, MinResidual float64
	HVPs                  int
	Restarts              int
	// Converged reports both residuals within Tol; MaxConverged λ1's alone.
	Converged, MaxConverged bool
	// Warm reports a start from a warm state.
	Warm bool
}

// ExtremesWarm is the warm state of Extremes: the last unit Ritz vectors of
// both ends with their values, and the vectors of the solve before, from
// which the next solve extrapolates.
type ExtremesWarm struct {
	Max, Min           []float64
	MaxValue, MinValue float64
	PrevMax, PrevMin   []float64
}

// Extremes computes λ1 and λmin of op in one Rayleigh–Ritz (Davidson-type)
// iteration that shares its products between both ends: the basis starts
// from warm's extrapolated vectors (random vectors from Seed when cold), is
// reorthogonalised in full, and grows by the residuals of the ends not yet
// converged, so that a round costs one or two products. H times the basis
// is kept, which makes the residuals free. At MaxHVPs it returns what it
// reached, with the computed residuals, and an error wrapping
// ErrNotConverged.
func Extremes(ctx context.Context, op hvp.Operator, opt ExtremesOptions, warm *ExtremesWarm) (ExtremesResult, *ExtremesWarm, error) {
	opt = opt.withDefaults()
	n := op.Dim()
	if n <= 0 || opt.Tol < 0 || opt.MaxHVPs < 1 || opt.MaxBasis < 4 {
		return ExtremesResult{}, nil, fmt.Errorf("estimators: Extremes: dimension %d, options %+v", n, opt)
	}
	b := &extBasis{op: op, n: n, cap: opt.MaxBasis + 2}
	rng := stream(opt.Seed, streamExtremes)
	random := func() []float64 { x := make([]float64, n); gaussian(x, rng); return x }
	starts, isWarm := extremesStarts(n, warm)
	for len(starts) < 2 { // one warm vector (a seeded λ1) gets a random partner
		starts = append(starts, random())
	}
	for _, v := range starts {
		if _, err := b.add(ctx, v); err != nil {
			return ExtremesResult{}, nil, err
		}
	}
	if b.m < min(2, n) { // a λmin from λ1's vector alone would be no estimate
		if err := b.expand(ctx, nil, opt.MaxHVPs, random); err != nil || b.m < min(2, n) {
			return ExtremesResult{}, nil, fmt.Errorf("estimators: Extremes: no start vector: %w", err)
		}
	}
	res := ExtremesResult{Warm: isWarm}
	var prev [][]float64 // the last round's Ritz coefficients, LOBPCG-style
	addedRandom := !isWarm
	for {
		r, err := b.ritz()
		if err != nil {
			return ExtremesResult{}, nil, err
		}
		res.MaxValue, res.MaxResidual = r.theta[1], r.res[1]
		res.MinValue, res.MinResidual = r.theta[0], r.res[0]
		res.HVPs = b.hvps
		lim := opt.Tol * math.Max(math.Abs(r.theta[1]), math.Abs(r.theta[0]))
		res.MaxConverged = r.res[1] <= lim
		res.Converged = res.MaxConverged && r.res[0] <= lim
		if res.Converged || b.hvps >= opt.MaxHVPs || b.m == n {
			nw := &ExtremesWarm{Max: r.y[1], Min: r.y[0], MaxValue: r.theta[1], MinValue: r.theta[0]}
			if isWarm {
				nw.PrevMax, nw.PrevMin = warm.Max, warm.Min
			}
			if !res.Converged && b.m < n {
				return res, nw, fmt.Errorf("%w: extremes after %d HVPs, residuals %.3g, %.3g over %.3g", ErrNotConverged, b.hvps, r.res[1], r.res[0], lim)
			}
			res.Converged = true
			return res, nw, nil
		}
		var dirs [][]float64
		for e := range 2 {
			if r.res[e] > lim {
				dirs = append(dirs, r.r[e])
			}
		}
		if !addedRandom && b.hvps >= opt.WarmMaxHVPs {
			dirs, addedRandom = append(dirs, random()), true
		}
		if b.m+len(dirs) > opt.MaxBasis {
			b.restart(r, prev)
			res.Restarts++
			prev = nil
		} else {
			prev = r.coef
		}
		if err := b.expand(ctx, dirs, opt.MaxHVPs, random); err != nil {
			return ExtremesResult{}, nil, err
		}
	}
}

// extremesStarts returns the warm start vectors, each extrapolated from its
// previous version when there is one.
func extremesStarts(n int, w *ExtremesWarm) ([][]float64, bool) {
	if w == nil {
		return nil, false
	}
	var out [][]float64
	for _, p := range [][2][]float64{{w.Max, w.PrevMax}, {w.Min, w.PrevMin}} {
		v, u := p[0], p[1]
		if len(v) != n {
			continue
		}
		if len(u) == n {
			v = extrapolate(v, u)
		}
		out = append(out, v)
	}
	return out, len(out) > 0
}

// extBasis is an orthonormal basis Q (rows back to back) and H·Q.
type extBasis struct {
	op        hvp.Operator
	n, m, cap int
	q, hq     []float64
	hvps      int
}

func (b *extBasis) view(x []float64) *mat.Dense { return mat.NewDense(b.m, b.n, x[:b.m*b.n]) }

// add orthonormalises v against Q (classical Gram–Schmidt, twice, as two
// matrix–vector products with Q) and appends it with its product; it
// reports false for a v already in Q's span.
func (b *extBasis) add(ctx context.Context, v []float64) (bool, error) {
	if b.m >= b.cap || b.m >= b.n {
		return false, nil
	}
	x := append([]float64(nil), v...)
	nrm0 := floats.Norm(x, 2)
	if !(nrm0 > 0) || math.IsInf(nrm0, 0) {
		return false, nil
	}
	for pass := 0; pass < 2 && b.m > 0; pass++ {
		q := b.view(b.q)
		var c, p mat.VecDense
		c.MulVec(q, mat.NewVecDense(b.n, x))
		p.MulVec(q.T(), &c)
		floats.Sub(x, p.RawVector().Data)
	}
	nrm := floats.Norm(x, 2)
	if nrm <= 1e-10*nrm0 {
		return false, nil
	}
	floats.Scale(1/nrm, x)
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if len(b.q) < (b.m+1)*b.n { // grown as needed: a warm solve rarely fills the cap
		b.q, b.hq = append(b.q, make([]float64, b.n)...), append(b.hq, make([]float64, b.n)...)
	}
	hx := b.hq[b.m*b.n : (b.m+1)*b.n]
	if err := b.op.Apply(hx, x); err != nil {
		return false, fmt.Errorf("estimators: Extremes: %w", err)
	}
	b.hvps++
	if s := floats.Sum(hx); math.IsNaN(s) || math.IsInf(s, 0) {
		return false, errors.New("estimators: Extremes: non-finite Hessian-vector product")
	}
	copy(b.q[b.m*b.n:], x)
	b.m++
	return true, nil
}

// expand adds dirs within the product cap, and a random vector when none
// of them was new.
func (b *extBasis) expand(ctx context.Context, dirs [][]float64, maxHVPs int, random func() []float64) error {
	added := false
	for _, d := range dirs {
		if b.hvps >= maxHVPs {
			break
		}
		ok, err := b.add(ctx, d)
		if err != nil {
			return err
		}
		added = added || ok
	}
	for try := 0; !added && try < 3 && b.hvps < maxHVPs; try++ {
		ok, err := b.add(ctx, random())
		if err != nil {
			return err
		}
		added = ok
	}
	return nil
}

// ritzPairs are the Rayleigh–Ritz pairs of both ends (index 0 the smallest,
// 1 the largest) with their residual vectors and norms, plus all the
// projected eigenvectors (columns of s, ascending values) for a restart.
type ritzPairs struct {
	theta, res [2]float64
	y, r       [2][]float64
	coef       [][]float64 // the two ends' coefficients in Q
	s          *mat.Dense
	vals       []float64
}

func (b *extBasis) ritz() (ritzPairs, error) {
	q, hq := b.view(b.q), b.view(b.hq)
	var t mat.Dense
	t.Mul(q, hq.T())
	sym := mat.NewSymDense(b.m, nil)
	for i := range b.m {
		for j := i; j < b.m; j++ {
			sym.SetSym(i, j, (t.At(i, j)+t.At(j, i))/2)
		}
	}
	var es mat.EigenSym
	if !es.Factorize(sym, true) {
		return ritzPairs{}, errors.New("estimators: Extremes: projected eigenproblem failed")
	}
	var r ritzPairs
	r.vals = es.Values(nil)
	r.s = new(mat.Dense)
	es.VectorsTo(r.s)
	for e, col := range [2]int{0, b.m - 1} {
		c := mat.Col(nil, col, r.s)
		r.coef = append(r.coef, c)
		var y, hy mat.VecDense
		y.MulVec(q.T(), mat.NewVecDense(b.m, c))
		hy.MulVec(hq.T(), mat.NewVecDense(b.m, c))
		r.theta[e] = r.vals[col]
		r.y[e] = y.RawVector().Data
		rv := hy.RawVector().Data
		floats.AddScaled(rv, -r.theta[e], r.y[e])
		r.r[e] = rv
		r.res[e] = floats.Norm(rv, 2)
	}
	return r, nil
}

// restart replaces Q by the span of the extreme Ritz vectors of both ends
// and of the previous round's two (LOBPCG's directions), as Cᵀ·Q with C
// orthonormal in the coefficient space, so it costs no products.
func (b *extBasis) restart(r ritzPairs, prev [][]float64) {
	keep := (b.cap - 2) / 4 // from each end; leaves room to grow
	var cols [][]float64
	for i := range keep {
		cols = append(cols, mat.Col(nil, i, r.s), mat.Col(nil, b.m-1-i, r.s))
	}
	for _, p := range prev {
		c := make([]float64, b.m)
		copy(c, p)
		for _, k := range cols {
			floats.AddScaled(c, -floats.Dot(c, k), k)
		}
		for _, k := range cols { // twice is enough
			floats.AddScaled(c, -floats.Dot(c, k), k)
		}
		if nrm := floats.Norm(c, 2); nrm > 1e-8 {
			floats.Scale(1/nrm, c)
			cols = append(cols, c)
		}
	}
	k := len(cols)
	cm := mat.NewDense(k, b.m, nil)
	for i, c := range cols {
		cm.SetRow(i, c)
	}
	var nq, nhq mat.Dense
	nq.Mul(cm, b.view(b.q))
	nhq.Mul(cm, b.view(b.hq))
	copy(b.q, nq.RawMatrix().Data)
	copy(b.hq, nhq.RawMatrix().Data)
	b.m = k
}

// Vectors returns the n-vectors Extremes holds at once (see memory.go): Q
// and H·Q, MaxBasis + 2 rows each plus the slack append leaves when they
// grow (a quarter); at a restart the new Q and H·Q, two rows per kept pair
// and the previous round's two; the two Ritz vectors and their residuals;
// and the start vectors, a random one and the copy being orthonormalised.
// The warm state passed in is the caller's and not counted.
func (o ExtremesOptions) Vectors() int {
	o = o.withDefaults()
	c := o.MaxBasis + 2
	basis := 2 * ((5*c+3)/4 + 1)
	restart := 2 * (2*((c-2)/4) + 2)
	return basis + restart + 4 + 4
}
