package estimators

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/stat"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/hessmon/hessmon/hvp"
)

// Trace methods, as reported in TraceResult.Method.
const (
	// MethodHutchinson is plain Hutchinson with Rademacher probes.
	MethodHutchinson = "hutchinson"
	// MethodHutchPP is deflated Hutchinson (Hutch++): the trace of H on a
	// subspace Q exactly plus Hutchinson on (I−QQᵀ)H(I−QQᵀ).
	MethodHutchPP = "hutch++"
	// MethodDeltaShift tracks the trace across calls (DeltaShift).
	MethodDeltaShift = "deltashift"
	// MethodDeltaShiftPP tracks the deflated remainder across calls.
	MethodDeltaShiftPP = "deltashift++"
)

// Block is a contiguous slice of the parameter vector, typically one layer
// tensor, whose diagonal Hessian block trace tr(H_bb) is wanted.
type Block struct {
	Name   string
	Offset int
	Len    int
}

// TraceOptions configures Trace. Zero values select the defaults.
type TraceOptions struct {
	// RelTol is the target relative standard error: probing stops once
	// stderr ≤ RelTol·|estimate| (or ≤ AbsTol) after MinProbes probes.
	// Default 0.01; a negative value disables it (run to MaxHVPs).
	RelTol float64
	// AbsTol is an absolute standard-error target (default none).
	AbsTol float64
	// MinProbes is the least number of probes before the stop rule is
	// consulted, so the standard error is itself meaningful. Default 10.
	MinProbes int
	// MaxHVPs caps all HVPs spent, deflation included. Default 100.
	MaxHVPs int
	Seed    uint64
	// Blocks asks for per-block traces from the same probes (no extra
	// HVPs). Blocks must lie inside the vector; they need not cover it.
	Blocks []Block
	// Deflate is a basis Q (e.g. the top eigenvectors) whose part of the
	// trace, tr(QᵀHQ), is taken exactly; Hutchinson only sees the rest.
	// The vectors are orthonormalised internally.
	Deflate [][]float64
	// DeflateProducts optionally holds H·Deflate[i], saving len(Deflate)
	// HVPs. They must be exact products with this operator.
	DeflateProducts [][]float64
	// DeflateOrthonormal promises that Deflate is already orthonormal (to
	// rounding), as an eigen solve's basis is: the Gram–Schmidt passes are
	// skipped, which on a 35-vector basis of 118k parameters is most of
	// the deflation's cost.
	DeflateOrthonormal bool
	// SketchRank, when Deflate is empty, builds Q = orth(H·S) from a random
	// S with SketchRank columns (Hutch++), costing 2·SketchRank HVPs.
	SketchRank int
	// NoTracking disables reuse of the warm state's probes.
	NoTracking bool
}

// BlockTraceResult is tr(H_bb) for one block with its standard error.
type BlockTraceResult struct {
	Name   string
	Value  float64
	StdErr float64
	Method string
}

// TraceResult is a stochastic trace estimate with its certificate.
type TraceResult struct {
	Value  float64
	StdErr float64
	// Probes is the number of random probes (each one HVP).
	Probes int
	// HVPs counts all products, deflation included.
	HVPs   int
	Method string
	Blocks []BlockTraceResult
	// Converged reports that the standard-error target was met.
	Converged bool
	// Deflated is the dimension of the exactly handled subspace, Exact its
	// trace tr(QᵀHQ) (already included in Value).
	Deflated int
	Exact    float64
	// Reused is the number of probes carried over from the warm state;
	// Gamma is DeltaShift's γ when tracking was chosen (the weight of the
	// fresh estimate), 1 otherwise.
	Reused int
	Gamma  float64
}

// CI returns a two-sided confidence interval at the given level (e.g.
// 0.95), using Student's t with Probes−1 degrees of freedom.
func (r TraceResult) CI(level float64) (lo, hi float64) {
	return ci(r.Value, r.StdErr, r.Probes, level)
}

// CI returns a two-sided confidence interval for the block trace.
func (r BlockTraceResult) CI(level float64, probes int) (lo, hi float64) {
	return ci(r.Value, r.StdErr, probes, level)
}

func ci(v, se float64, probes int, level float64) (lo, hi float64) {
	if probes < 2 || !(level > 0 && level < 1) {
		return math.Inf(-1), math.Inf(1)
	}
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(probes - 1)}.Quantile(0.5 + level/2)
	return v - t*se, v + t*se
}

// TraceWarm is the tracking state of Trace. It holds no vectors: probes are
// regenerated from (Seed, ID), and only their previous quadratic forms
// zᵀHz are kept.
type TraceWarm struct {
	Dim    int
	Seed   uint64
	NextID uint64
	// IDs are the fresh probes of the last call; they are reused once.
	IDs    []uint64
	Blocks []Block
	// DeflateRank is the deflation dimension the Deflated chain refers to.
	DeflateRank int
	Plain       TraceChain
	Deflated    TraceChain
}

// TraceChain is the tracked state of one estimator family: entry 0 is the
// total, entry 1+i block i.
type TraceChain struct {
	Valid bool
	Comps []ChainComp
}

// ChainComp is the previous estimate of the stochastic part of one trace
// (total or block), its variance, the weight it put on each stored probe,
// the pooled per-probe variances of samples (S2, with Nu degrees of
// freedom) and of their changes (S2D, NuD), and the stored probes' samples.
type ChainComp struct {
	Value, Var, Omega float64
	S2, Nu, S2D, NuD  float64
	Samples           []float64
}

// candidate is one estimate of a trace component.
type candidate struct {
	value, variance float64
	omega           float64 // weight on each fresh probe
	tracked         bool
	gamma           float64
}

// probeRec describes one probe of this call.
type probeRec struct {
	old    bool
	oldIdx int    // index into the warm IDs
	id     uint64 // fresh probe id
}

// Trace estimates tr(H) with Rademacher probes and reports its standard
// error. It stops adaptively at the relative standard-error target or at the
// HVP budget. Per-block traces come from the same probes at no extra HVPs.
//
// With Deflate (or SketchRank) it is deflated Hutchinson (Hutch++). With a
// warm state it also reuses the previous call's probes on the new operator,
// which estimates the change tr(H_t) − tr(H_{t−1}) with little variance, and
// combines the previous estimate with fresh probes as in DeltaShift
// (Dharangutte & Musco 2021): t = a·(t_prev + Δ̂) + (1−a)·fresh, with a
// chosen for minimum estimated variance, including the previous estimate's
// variance and its covariance with Δ̂ through the shared probes. Among
// plain, deflated and their tracked forms it reports the estimate of least
// estimated variance for the HVPs spent, and names it in Method.
func Trace(ctx context.Context, op hvp.Operator, opt TraceOptions, warm *TraceWarm) (TraceResult, *TraceWarm, error) {
	t, err := newTraceRun(op.Dim(), opt, warm)
	if err != nil {
		return TraceResult{}, nil, err
	}
	if warm != nil && warm.Dim != t.n {
		warm = nil
	}
	if warm != nil {
		t.nextID = warm.NextID
	}
	if err := t.deflate(ctx, op); err != nil {
		return t.res, nil, err
	}
	if t.res.HVPs >= t.maxHVPs {
		return t.res, nil, fmt.Errorf("estimators: trace budget of %d HVPs leaves no probes after %d for deflation", t.maxHVPs, t.res.HVPs)
	}
	t.chains(warm)
	if err := t.probeLoop(ctx, op); err != nil {
		return t.res, nil, err
	}
	return t.finish()
}

// traceRun is one Trace call: its options with defaults, the deflation,
// the previous chains it may continue, and the samples so far.
type traceRun struct {
	opt                 TraceOptions
	n, nb, nc           int
	relTol              float64
	minProbes, maxHVPs  int
	res                 TraceResult
	df                  *deflation
	k                   int
	nextID              uint64
	old                 []uint64
	oldSeed             uint64
	plainPrev, deflPrev *TraceChain
	blocksOK            bool
	probes              []probeRec
	plain, defl         [][]float64
	usedOld             int
	best                estimate
}

// newTraceRun validates opt and fills in its defaults.
func newTraceRun(n int, opt TraceOptions, warm *TraceWarm) (*traceRun, error) {
	t := &traceRun{opt: opt, n: n, relTol: opt.RelTol, minProbes: opt.MinProbes, maxHVPs: opt.MaxHVPs, res: TraceResult{Gamma: 1}}
	if t.relTol == 0 {
		t.relTol = 0.01
	}
	if t.minProbes <= 0 {
		t.minProbes = 10
	}
	if t.maxHVPs <= 0 {
		t.maxHVPs = 100
	}
	for _, b := range opt.Blocks {
		if b.Offset < 0 || b.Len < 0 || b.Offset+b.Len > n {
			return nil, fmt.Errorf("estimators: block %q [%d,%d) outside dimension %d", b.Name, b.Offset, b.Offset+b.Len, n)
		}
	}
	if len(opt.Deflate) > 0 && opt.SketchRank > 0 {
		return nil, errors.New("estimators: use either Deflate or SketchRank, not both")
	}
	if opt.DeflateProducts != nil && len(opt.DeflateProducts) != len(opt.Deflate) {
		return nil, fmt.Errorf("estimators: %d deflation products for %d vectors", len(opt.DeflateProducts), len(opt.Deflate))
	}
	if opt.SketchRank < 0 || math.IsNaN(t.relTol) || math.IsNaN(opt.AbsTol) {
		return nil, errors.New("estimators: negative or NaN trace option")
	}
	t.nb = len(opt.Blocks)
	t.nc = t.nb + 1
	t.plain, t.defl = make([][]float64, t.nc), make([][]float64, t.nc)
	return t, nil
}

// deflate builds the deflation subspace: the given basis, or a Hutch++
// sketch Q = orth(H·S).
func (t *traceRun) deflate(ctx context.Context, op hvp.Operator) error {
	opt, n := t.opt, t.n
	var err error
	switch {
	case len(opt.Deflate) > 0:
		t.df, err = newDeflation(ctx, op, opt.Deflate, opt.DeflateProducts, opt.Blocks, &t.res.HVPs, opt.DeflateOrthonormal && opt.DeflateProducts != nil)
	case opt.SketchRank > 0:
		s := make([][]float64, min(opt.SketchRank, n))
		r := stream(opt.Seed, streamSketch^t.nextID)
		for i := range s {
			x := make([]float64, n)
			gaussian(x, r)
			y := make([]float64, n)
			if err := hvp.ApplyContext(ctx, op, y, x); err != nil {
				return fmt.Errorf("estimators: Hessian-vector product: %w", err)
			}
			t.res.HVPs++
			s[i] = y
		}
		t.df, err = newDeflation(ctx, op, s, nil, opt.Blocks, &t.res.HVPs, false)
	}
	if err != nil {
		return err
	}
	if t.df != nil {
		t.k = len(t.df.q)
		t.res.Deflated = t.k
		t.res.Exact = t.df.exact[0]
	}
	return nil
}

// chains finds which previous chains can be continued.
func (t *traceRun) chains(warm *TraceWarm) {
	if warm == nil || t.opt.NoTracking || len(warm.IDs) == 0 {
		return
	}
	t.old, t.oldSeed = warm.IDs, warm.Seed
	t.blocksOK = sameBlocks(warm.Blocks, t.opt.Blocks)
	if warm.Plain.Valid && len(warm.Plain.Comps) >= 1 {
		t.plainPrev = &warm.Plain
	}
	if t.df != nil && warm.Deflated.Valid && warm.DeflateRank == t.k && len(warm.Deflated.Comps) >= 1 {
		t.deflPrev = &warm.Deflated
	}
}

func (t *traceRun) validComp(ch *TraceChain, c int) *ChainComp {
	if ch == nil || (c > 0 && !t.blocksOK) || c >= len(ch.Comps) || len(ch.Comps[c].Samples) != len(t.old) {
		return nil
	}
	return &ch.Comps[c]
}

// traceBuffers are the probe loop's chunk storage: probes Z, their
// deflated forms (I−QQᵀ)Z and products W, rows of n.
type traceBuffers struct {
	zs, ws, zps []float64
	ck          *chunkDefl
	chunk       int
	first       int
	zw          []float64 // z[b]·w[b] per block
}

// Probe loop. Deflated probes go in chunks: the products with Q and HQ of
// a chunk's probes and products are GEMMs over the chunk instead of GEMVs
// per probe (on 35 vectors of 118k parameters those passes, not the HVPs,
// were most of a probe's time). The stop rule is still consulted after
// every HVP; the per-block samples, which it does not use, are completed
// at the end of each chunk. The first chunk is the probes the stop rule
// needs anyway.
func (t *traceRun) buffers() *traceBuffers {
	n := t.n
	tb := &traceBuffers{chunk: 1, first: 1, zw: make([]float64, t.nb)}
	if t.df != nil {
		limit := max(1, traceChunkFloats/max(n, 1))
		tb.chunk = min(traceChunk, limit)
		tb.first = traceFirstChunk(n, t.minProbes)
	}
	tb.zs, tb.ws = make([]float64, tb.first*n), make([]float64, tb.first*n)
	if t.df != nil {
		tb.zps = make([]float64, tb.first*n)
		tb.ck = newChunkDefl(t.df, tb.first, t.opt.Blocks, n)
	}
	return tb
}

// probeLoop draws probes until the stop rule or the budget.
func (t *traceRun) probeLoop(ctx context.Context, op hvp.Operator) error {
	tb := t.buffers()
	for t.res.HVPs < t.maxHVPs {
		m := min(tb.chunk, t.maxHVPs-t.res.HVPs)
		if len(t.probes) == 0 {
			m = min(tb.first, t.maxHVPs-t.res.HVPs)
		}
		recs := t.planChunk(tb, m)
		used, stop, err := t.runChunk(ctx, op, tb, recs)
		if err != nil {
			return err
		}
		if tb.ck != nil && t.nb > 0 {
			tb.ck.blockSamples(t.plain, t.defl, tb.ws, used, t.n)
		}
		if stop {
			break
		}
	}
	return nil
}

// planChunk draws the chunk's m probes: reused and fresh probes alternate
// while reused ones remain, as if drawn one at a time.
func (t *traceRun) planChunk(tb *traceBuffers, m int) []probeRec {
	n := t.n
	recs := make([]probeRec, m)
	uo, id := t.usedOld, t.nextID
	for i := range recs {
		if uo < len(t.old) && (len(t.probes)+i)%2 == 0 {
			recs[i] = probeRec{old: true, oldIdx: uo}
			rademacher(tb.zs[i*n:(i+1)*n], t.oldSeed, t.old[uo])
			uo++
		} else {
			recs[i] = probeRec{id: id}
			rademacher(tb.zs[i*n:(i+1)*n], t.opt.Seed, id)
			id++
		}
	}
	if tb.ck != nil {
		tb.ck.prepare(tb.zps, tb.zs, m, n)
	}
	return recs
}

// runChunk applies H to the chunk's probes one at a time, records their
// samples and consults the stop rule after each. It returns the probes
// used and whether the rule stopped.
func (t *traceRun) runChunk(ctx context.Context, op hvp.Operator, tb *traceBuffers, recs []probeRec) (int, bool, error) {
	n := t.n
	used := 0
	for i, pr := range recs {
		z, w := tb.zs[i*n:(i+1)*n], tb.ws[i*n:(i+1)*n]
		x := z
		if tb.ck != nil {
			x = tb.zps[i*n : (i+1)*n]
		}
		if err := hvp.ApplyContext(ctx, op, w, x); err != nil {
			return used, false, fmt.Errorf("estimators: Hessian-vector product: %w", err)
		}
		t.res.HVPs++
		used++
		t.probes = append(t.probes, pr)
		if pr.old {
			t.usedOld++
		} else {
			t.nextID++
		}
		if err := t.sample(tb, i, z, x, w); err != nil {
			return used, false, err
		}
		t.best = bestEstimate(t.probes, t.plain[0], t.defl[0], t.validComp(t.plainPrev, 0), t.validComp(t.deflPrev, 0), t.df, 0)
		t.res.Probes = len(t.probes)
		if t.res.Probes >= t.minProbes {
			// Stop on an upper confidence bound of the standard error, not
			// the estimate itself: the samples zᵀHz are skewed, a low sample
			// variance comes with a low mean, and stopping on it would bias
			// the result and shrink the interval's coverage.
			se := math.Sqrt(t.best.variance * stopInflation(t.res.Probes))
			if (t.relTol > 0 && se <= t.relTol*math.Abs(t.best.value)) || se <= t.opt.AbsTol {
				t.res.Converged = true
				return used, true, nil
			}
		}
	}
	return used, false, nil
}

// sample records probe i's total samples (and, without deflation, its
// block samples; with it they wait for the chunk's end).
func (t *traceRun) sample(tb *traceBuffers, i int, z, x, w []float64) error {
	for b, bl := range t.opt.Blocks {
		lo, hi := bl.Offset, bl.Offset+bl.Len
		tb.zw[b] = floats.Dot(z[lo:hi], w[lo:hi])
	}
	if tb.ck == nil {
		s := floats.Dot(z, w)
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return ErrNonFinite
		}
		t.plain[0] = append(t.plain[0], s)
		for b := range t.opt.Blocks {
			t.plain[b+1] = append(t.plain[b+1], tb.zw[b])
		}
		return nil
	}
	// zᵀ(I−QQᵀ)H z' = z'ᵀw; zᵀHz = zᵀw + (Qz)·(HQ z).
	s := floats.Dot(x, w)
	p := floats.Dot(z, w) + tb.ck.plainTerm(i)
	if math.IsNaN(s) || math.IsInf(s, 0) || math.IsNaN(p) || math.IsInf(p, 0) {
		return ErrNonFinite
	}
	t.defl[0] = append(t.defl[0], s)
	t.plain[0] = append(t.plain[0], p)
	tb.ck.keepBlockDots(i, tb.zw)
	return nil
}

// finish packages the chosen estimate, the block traces and the next warm
// state: this call's fresh probes with both families' best estimates.
func (t *traceRun) finish() (TraceResult, *TraceWarm, error) {
	res, best, opt := t.res, t.best, t.opt
	res.Reused = t.usedOld
	res.Value = best.value
	res.StdErr = math.Sqrt(best.variance)
	res.Method = best.method
	if best.tracked {
		res.Gamma = best.gamma
	}
	for i, b := range opt.Blocks {
		var e estimate
		if best.deflated {
			e = familyEstimate(t.probes, t.defl[i+1], t.validComp(t.deflPrev, i+1), t.df.exact[i+1], true)
		} else {
			e = familyEstimate(t.probes, t.plain[i+1], t.validComp(t.plainPrev, i+1), 0, false)
		}
		res.Blocks = append(res.Blocks, BlockTraceResult{Name: b.Name, Value: e.value, StdErr: math.Sqrt(e.variance), Method: e.method})
	}
	nw := &TraceWarm{Dim: t.n, Seed: opt.Seed, NextID: t.nextID, Blocks: slices.Clone(opt.Blocks), DeflateRank: t.k}
	var fresh []int
	for i, p := range t.probes {
		if !p.old {
			nw.IDs = append(nw.IDs, p.id)
			fresh = append(fresh, i)
		}
	}
	nw.Plain = nextChain(t.probes, fresh, t.plain, func(c int) *ChainComp { return t.validComp(t.plainPrev, c) })
	if t.df != nil {
		nw.Deflated = nextChain(t.probes, fresh, t.defl, func(c int) *ChainComp { return t.validComp(t.deflPrev, c) })
	}
	return res, nw, nil
}

// stopInflation is the factor (N−1)/χ²_{N−1}(0.2) by which a variance
// estimated from N samples is below the truth with probability 0.2.
func stopInflation(n int) float64 {
	if n < 2 {
		return math.Inf(1)
	}
	df := float64(n - 1)
	return df / distuv.ChiSquared{K: df}.Quantile(0.2)
}

func sameBlocks(a, b []Block) bool {
	return slices.EqualFunc(a, b, func(x, y Block) bool { return x.Offset == y.Offset && x.Len == y.Len })
}

// estimate is a chosen candidate with its family.
type estimate struct {
	candidate
	method   string
	deflated bool
}

// bestEstimate picks the least-variance estimate of component c.
func bestEstimate(probes []probeRec, plain, defl []float64, plainPrev, deflPrev *ChainComp, df *deflation, c int) estimate {
	best := familyEstimate(probes, plain, plainPrev, 0, false)
	if df != nil {
		if e := familyEstimate(probes, defl, deflPrev, df.exact[c], true); e.variance < best.variance || math.IsNaN(best.variance) {
			best = e
		}
	}
	return best
}

// familyEstimate returns the better of the all-probes estimate and, when a
// previous chain exists, the tracked one; exact is added to both.
func familyEstimate(probes []probeRec, samples []float64, prev *ChainComp, exact float64, deflated bool) estimate {
	all, tr, ok, _ := candidates(probes, samples, prev)
	e := estimate{candidate: all, deflated: deflated, method: MethodHutchinson}
	if deflated {
		e.method = MethodHutchPP
	}
	if ok && tr.variance < all.variance {
		e.candidate = tr
		e.method = MethodDeltaShift
		if deflated {
			e.method = MethodDeltaShiftPP
		}
	}
	e.value += exact
	return e
}

// poolForget is the weight of the previous pooled variance in the next
// one: variances of quadratic forms are skewed and noisy from a dozen
// probes, so tracking pools them over recent calls (memory ≈ 1/(1−ρ)).
const poolForget = 0.9

// pooled combines a sample variance with df degrees of freedom with a
// previous pool.
func pooled(v float64, df int, prevV, prevNu float64) (float64, float64) {
	if df < 1 {
		return prevV, prevNu
	}
	if prevNu <= 0 || math.IsNaN(prevV) || math.IsInf(prevV, 0) {
		return v, float64(df)
	}
	nu := poolForget*prevNu + float64(df)
	return (poolForget*prevNu*prevV + float64(df)*v) / nu, nu
}

// stats are the pooled per-probe variances carried along a chain.
type stats struct{ s2, nu, s2d, nud float64 }

// candidates computes the all-probes estimate of the stochastic part and,
// when prev is not nil and enough old probes were used, the tracked one,
// plus the pooled variances to carry on.
func candidates(probes []probeRec, samples []float64, prev *ChainComp) (all, tr candidate, ok bool, st stats) {
	n := len(samples)
	all.value = stat.Mean(samples, nil)
	all.variance = math.Inf(1)
	s2now := math.NaN()
	if n >= 2 {
		s2now = stat.Variance(samples, nil)
		all.variance = s2now / float64(n)
	}
	all.omega = 1 / float64(n)
	all.gamma = 1
	if prev == nil {
		st.s2, st.nu = pooled(s2now, n-1, 0, 0)
		return all, tr, false, st
	}
	st.s2, st.nu = pooled(s2now, n-1, prev.S2, prev.Nu)
	if n >= 2 {
		// Compared with the tracked estimate on the same robust footing.
		all.variance = math.Max(st.s2, s2now) / float64(n)
	}
	st.s2d, st.nud = prev.S2D, prev.NuD
	if math.IsInf(prev.Var, 0) || math.IsNaN(prev.Var) {
		return all, tr, false, st
	}
	var d, ps []float64
	var sumF float64
	for i, p := range probes[:n] {
		if p.old {
			d = append(d, samples[i]-prev.Samples[p.oldIdx])
			ps = append(ps, prev.Samples[p.oldIdx])
		} else {
			sumF += samples[i]
		}
	}
	mo := len(d)
	mf := n - mo
	if mo < 2 {
		return all, tr, false, st
	}
	s2dNow := stat.Variance(d, nil)
	st.s2d, st.nud = pooled(s2dNow, mo-1, prev.S2D, prev.NuD)
	delta := stat.Mean(d, nil)
	// The larger of the pooled and the current variance: the pool guards
	// against a small sample's luck, the current one against a pool that
	// lags behind a growing variance.
	vD := math.Max(st.s2d, s2dNow) / float64(mo)
	cov := stat.Covariance(ps, d, nil)
	u := prev.Var + vD + 2*prev.Omega*cov
	// Cauchy–Schwarz bounds the covariance term; keep U a variance.
	lb := math.Sqrt(prev.Var) - math.Sqrt(vD)
	u = math.Max(u, lb*lb)
	tr.tracked = true
	if mf < 1 {
		tr.value = prev.Value + delta
		tr.variance = u
		tr.gamma = 0
		return all, tr, true, st
	}
	// Every probe of this call, reused or fresh, is a Hutchinson sample of
	// the current operator, so the pooled variance serves the fresh mean.
	h := sumF / float64(mf)
	vF := math.Max(st.s2, s2now) / float64(mf)
	a := 0.5
	if u+vF > 0 {
		a = vF / (u + vF)
	}
	tr.value = a*(prev.Value+delta) + (1-a)*h
	tr.variance = a*a*u + (1-a)*(1-a)*vF
	tr.omega = (1 - a) / float64(mf)
	tr.gamma = 1 - a
	return all, tr, true, st
}

// nextChain stores, per component, the family's best estimate of the
// stochastic part, the pooled variances and the fresh probes' samples.
func nextChain(probes []probeRec, fresh []int, samples [][]float64, prev func(int) *ChainComp) TraceChain {
	ch := TraceChain{Valid: len(fresh) > 0, Comps: make([]ChainComp, len(samples))}
	for c, s := range samples {
		if len(s) == 0 {
			ch.Valid = false
			continue
		}
		all, tr, ok, st := candidates(probes, s, prev(c))
		best := all
		if ok && tr.variance < all.variance {
			best = tr
		}
		cc := ChainComp{Value: best.value, Var: best.variance, Omega: best.omega, S2: st.s2, Nu: st.nu, S2D: st.s2d, NuD: st.nud}
		for _, i := range fresh {
			cc.Samples = append(cc.Samples, s[i])
		}
		ch.Comps[c] = cc
	}
	if !ch.Valid {
		return TraceChain{}
	}
	return ch
}

// traceChunk probes share the deflation's GEMMs, at most traceChunkFloats
// values per chunk buffer (three of them: probes, projected probes,
// products). Each chunk reads Q and HQ four times (C, D, the projection
// and the block samples), so a probe of 25–40 trace HVPs takes two chunks
// of 16 rather than four of 8; past 2²³/16 = 524k parameters the buffer
// bound (64 MB a buffer) sets the chunk. At 2M parameters a bound of 2²²
// made chunks of 2 and 80 passes over a 35-vector basis per probe (45 GB
// of memory traffic, most of a 61 s probe); 2²⁴ (chunks of 9 at 1.86M)
// cost 27 n-vectors of buffers and more peak RSS than the time was worth.
const (
	traceChunk       = 16
	traceChunkFloats = 1 << 23
)

// chunkDefl holds, for a chunk of m probes Z (rows), the products with the
// deflation basis that the samples need: C = Z Qᵀ, D = Z HQᵀ (m×k), the same
// restricted to each block, and the per-block z·w dots kept until the chunk's
// products W are in, when E = W Qᵀ completes the per-block samples:
//
//	deflated: z[b]·((I−QQᵀ)w)[b] = z[b]·w[b] − (Qw)·(Q[:,b] z[b])
//	plain:    z[b]·(Hz)[b]       = z[b]·w[b] + (Qz)·(HQ[:,b] z[b])
type chunkDefl struct {
	df      *deflation
	k       int
	blocks  []Block
	tiled   bool        // the blocks tile [0, n) in order: C, D are sums of theirs
	c, d, e []float64   // m×k
	cb, db  [][]float64 // per block, m×k
	zw      [][]float64 // per probe of the chunk, per block
}

func newChunkDefl(df *deflation, chunk int, blocks []Block, n int) *chunkDefl {
	k := len(df.q)
	ck := &chunkDefl{df: df, k: k, blocks: blocks, c: make([]float64, chunk*k), d: make([]float64, chunk*k), e: make([]float64, chunk*k),
		cb: make([][]float64, len(blocks)), db: make([][]float64, len(blocks)), zw: make([][]float64, chunk)}
	for b := range blocks {
		ck.cb[b], ck.db[b] = make([]float64, chunk*k), make([]float64, chunk*k)
	}
	for i := range ck.zw {
		ck.zw[i] = make([]float64, len(blocks))
	}
	end := 0
	for _, b := range blocks {
		if b.Offset != end {
			break
		}
		end += b.Len
	}
	ck.tiled = len(blocks) > 0 && end == n
	return ck
}

// prepare computes C, D (and per block) for the m probes in zs and writes
// the projected probes (I−QQᵀ)z into zps.
func (ck *chunkDefl) prepare(zps, zs []float64, m, n int) {
	k := ck.k
	if k == 0 { // every deflation vector was dependent: nothing to remove
		copy(zps[:m*n], zs[:m*n])
		return
	}
	q := blas64.General{Rows: k, Cols: n, Stride: n, Data: ck.df.qm}
	hq := blas64.General{Rows: k, Cols: n, Stride: n, Data: ck.df.hqm}
	z := blas64.General{Rows: m, Cols: n, Stride: n, Data: zs[:m*n]}
	c := blas64.General{Rows: m, Cols: k, Stride: k, Data: ck.c[:m*k]}
	d := blas64.General{Rows: m, Cols: k, Stride: k, Data: ck.d[:m*k]}
	if ck.tiled {
		clear(c.Data)
		clear(d.Data)
	} else {
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, z, q, 0, c)
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, z, hq, 0, d)
	}
	for b, bl := range ck.blocks {
		cb, db := ck.cb[b][:m*k], ck.db[b][:m*k]
		if bl.Len == 0 {
			clear(cb)
			clear(db)
			continue
		}
		sub := func(a blas64.General) blas64.General {
			return blas64.General{Rows: a.Rows, Cols: bl.Len, Stride: a.Stride, Data: a.Data[bl.Offset : (a.Rows-1)*a.Stride+bl.Offset+bl.Len]}
		}
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, sub(z), sub(q), 0, blas64.General{Rows: m, Cols: k, Stride: k, Data: cb})
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, sub(z), sub(hq), 0, blas64.General{Rows: m, Cols: k, Stride: k, Data: db})
		if ck.tiled {
			floats.Add(c.Data, cb)
			floats.Add(d.Data, db)
		}
	}
	copy(zps[:m*n], zs[:m*n])
	blas64.Gemm(blas.NoTrans, blas.NoTrans, -1, c, q, 1, blas64.General{Rows: m, Cols: n, Stride: n, Data: zps[:m*n]})
}

// plainTerm is (Qz)·(HQ z) for probe i of the chunk.
func (ck *chunkDefl) plainTerm(i int) float64 {
	k := ck.k
	return floats.Dot(ck.c[i*k:(i+1)*k], ck.d[i*k:(i+1)*k])
}

func (ck *chunkDefl) keepBlockDots(i int, zw []float64) { copy(ck.zw[i], zw) }

// blockSamples appends the per-block samples of the chunk's first m
// probes, whose products are the rows of ws.
func (ck *chunkDefl) blockSamples(plain, defl [][]float64, ws []float64, m, n int) {
	if m == 0 {
		return
	}
	k := ck.k
	if k > 0 {
		q := blas64.General{Rows: k, Cols: n, Stride: n, Data: ck.df.qm}
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, blas64.General{Rows: m, Cols: n, Stride: n, Data: ws[:m*n]}, q, 0,
			blas64.General{Rows: m, Cols: k, Stride: k, Data: ck.e[:m*k]})
	}
	for i := range m {
		c, e := ck.c[i*k:(i+1)*k], ck.e[i*k:(i+1)*k]
		for b := range ck.blocks {
			zw := ck.zw[i][b]
			defl[b+1] = append(defl[b+1], zw-floats.Dot(e, ck.cb[b][i*k:(i+1)*k]))
			plain[b+1] = append(plain[b+1], zw+floats.Dot(c, ck.db[b][i*k:(i+1)*k]))
		}
	}
}

// deflation holds an orthonormal Q, H·Q and the exact trace parts.
type deflation struct {
	q, hq [][]float64
	qm    []float64 // q as one row-major k×n matrix, for the chunk GEMMs
	hqm   []float64 // hq likewise
	// exact[0] = tr(QᵀHQ); exact[1+i] is block i's exact part.
	exact []float64
}

func newDeflation(ctx context.Context, op hvp.Operator, basis, products [][]float64, blocks []Block, hvps *int, orthonormal bool) (*deflation, error) {
	n := op.Dim()
	df := &deflation{}
	for i, v := range basis {
		if len(v) != n || (products != nil && len(products[i]) != n) || (orthonormal && products == nil) {
			return nil, fmt.Errorf("%w: deflation vector %d", hvp.ErrDim, i)
		}
		if orthonormal {
			df.q = append(df.q, v)
			df.hq = append(df.hq, products[i])
			continue
		}
		var hx []float64
		if products != nil {
			hx = products[i]
		}
		df.addOrth(v, hx)
	}
	for i := range df.hq {
		if df.hq[i] != nil {
			continue
		}
		y := make([]float64, n)
		if err := hvp.ApplyContext(ctx, op, y, df.q[i]); err != nil {
			return nil, fmt.Errorf("estimators: Hessian-vector product: %w", err)
		}
		*hvps++
		df.hq[i] = y
	}
	df.exact = make([]float64, 1+len(blocks))
	if len(df.q) == 0 { // every vector was zero or dependent: nothing is deflated
		return df, nil
	}
	return df, df.exactParts(n, blocks)
}

// addOrth orthogonalises a copy of v (and of its product hv, when not nil,
// by the same combinations so that it stays H times the vector) against
// the basis and appends it unless it is zero or dependent: modified
// Gram–Schmidt, repeated while a pass removes most of what is left (DGKS: a
// nearly dependent set needs more than two).
func (df *deflation) addOrth(v, hv []float64) {
	x := slices.Clone(v)
	var hx []float64
	if hv != nil {
		hx = slices.Clone(hv)
	}
	n0 := floats.Norm(x, 2)
	if n0 == 0 || math.IsNaN(n0) || math.IsInf(n0, 0) {
		return
	}
	nrm := n0
	for pass := 0; pass < 5; pass++ {
		for j, u := range df.q {
			c := floats.Dot(u, x)
			floats.AddScaled(x, -c, u)
			if hx != nil {
				floats.AddScaled(hx, -c, df.hq[j])
			}
		}
		prev := nrm
		nrm = floats.Norm(x, 2)
		if pass >= 1 && nrm > prev/math.Sqrt2 {
			break
		}
	}
	if nrm <= 1e-8*n0 {
		return // dependent
	}
	floats.Scale(1/nrm, x)
	if hx != nil {
		floats.Scale(1/nrm, hx)
	}
	df.q = append(df.q, x)
	df.hq = append(df.hq, hx)
}

// exactParts computes M = QᵀHQ (symmetrised) with one GEMM, exact[0] =
// tr(M), and each block's exact part: with Y_a = hq_a − Σ_c M_ac q_c it is
// Σ_{j∈b} [(Q M Qᵀ)_jj + 2 (Q ∘ Y)_j·1] = 2 Σ_a (q_a·hq_a)_b − Σ_ac M_ac
// (q_a·q_c)_b, so one k×k Gram matrix and k dots per block, without the
// k×n matrix 2HQ − MQ.
func (df *deflation) exactParts(n int, blocks []Block) error {
	k := len(df.q)
	m := make([]float64, k*k)
	qm, hqm := contiguous(df.q, n), contiguous(df.hq, n)
	if qm == nil {
		qm = make([]float64, k*n)
		for a := 0; a < k; a++ {
			copy(qm[a*n:], df.q[a])
		}
	}
	if hqm == nil {
		hqm = make([]float64, k*n)
		for a := 0; a < k; a++ {
			copy(hqm[a*n:], df.hq[a])
		}
	}
	blas64.Gemm(blas.NoTrans, blas.Trans, 1, blas64.General{Rows: k, Cols: n, Stride: n, Data: qm},
		blas64.General{Rows: k, Cols: n, Stride: n, Data: hqm}, 0, blas64.General{Rows: k, Cols: k, Stride: k, Data: m})
	for a := 0; a < k; a++ {
		for b := a + 1; b < k; b++ {
			s := (m[a*k+b] + m[b*k+a]) / 2
			m[a*k+b], m[b*k+a] = s, s
		}
	}
	for a := 0; a < k; a++ {
		df.exact[0] += m[a*k+a]
	}
	if math.IsNaN(df.exact[0]) || math.IsInf(df.exact[0], 0) {
		return ErrNonFinite
	}
	gram := make([]float64, k*k)
	for i, bl := range blocks {
		if bl.Len == 0 {
			continue
		}
		lo, hi := bl.Offset, bl.Offset+bl.Len
		sub := blas64.General{Rows: k, Cols: bl.Len, Stride: n, Data: qm[lo : (k-1)*n+hi]}
		blas64.Gemm(blas.NoTrans, blas.Trans, 1, sub, sub, 0, blas64.General{Rows: k, Cols: k, Stride: k, Data: gram})
		var d float64
		for a := 0; a < k; a++ {
			d += floats.Dot(qm[a*n+lo:a*n+hi], hqm[a*n+lo:a*n+hi])
		}
		df.exact[i+1] = 2*d - floats.Dot(m, gram)
	}
	df.qm, df.hqm = qm, hqm
	return nil
}
