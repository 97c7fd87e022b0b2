package estimators

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

func trueTrace(s *mat.SymDense, lo, hi int) float64 {
	var t float64
	for i := lo; i < hi; i++ {
		t += s.At(i, i)
	}
	return t
}

func testBlocks(n int) []Block {
	return []Block{{"a", 0, n / 4}, {"b", n / 4, n / 2}, {"c", 3 * n / 4, n - 3*n/4}}
}

func TestTraceCoverage(t *testing.T) {
	const n = 160
	trials := 240
	if raceEnabled || testing.Short() {
		trials = 60
	}
	tm := newTestMatrix(hessianSpectrum(n, 5), 6)
	truth := floats.Sum(tm.lambda)
	blocks := testBlocks(n)
	ev, _, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 8, KeepVectors: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"hutchinson", "hutch++"} {
		covered, blockCovered, blockTotal := 0, 0, 0
		var relErr, probes float64
		for trial := 0; trial < trials; trial++ {
			opt := TraceOptions{RelTol: 0.03, MaxHVPs: 300, Seed: uint64(trial), Blocks: blocks}
			if mode == "hutch++" {
				opt.Deflate = ev.Vectors
			}
			res, _, err := Trace(context.Background(), tm.op, opt, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.Method != mode {
				t.Fatalf("method %q, want %q", res.Method, mode)
			}
			lo, hi := res.CI(0.95)
			if lo <= truth && truth <= hi {
				covered++
			}
			relErr += math.Abs(res.Value-truth) / truth
			probes += float64(res.Probes)
			for i, b := range res.Blocks {
				bt := trueTrace(tm.sym, blocks[i].Offset, blocks[i].Offset+blocks[i].Len)
				lo, hi := b.CI(0.95, res.Probes)
				blockTotal++
				if lo <= bt && bt <= hi {
					blockCovered++
				}
			}
		}
		cov := float64(covered) / float64(trials)
		bcov := float64(blockCovered) / float64(blockTotal)
		t.Logf("%s: 95%% CI coverage %.1f%% (blocks %.1f%%) over %d trials, mean |rel err| %.4f, mean probes %.1f",
			mode, 100*cov, 100*bcov, trials, relErr/float64(trials), probes/float64(trials))
		if cov < 0.90 || bcov < 0.90 {
			t.Errorf("%s: coverage %.3f, blocks %.3f, want ≥ 0.90", mode, cov, bcov)
		}
	}
}

func TestTraceBlocksSumAndExactness(t *testing.T) {
	const n = 120
	// Rank-deficient: deflating the range makes the trace exact.
	l := make([]float64, n)
	copy(l, []float64{5, -2, 3, 1.5, 0.7})
	tm := newTestMatrix(l, 2)
	blocks := []Block{{"x", 0, 50}, {"y", 50, 70}}
	ctx := context.Background()
	res, _, err := Trace(ctx, tm.op, TraceOptions{Blocks: blocks, MaxHVPs: 40, RelTol: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, b := range res.Blocks {
		sum += b.Value
	}
	if math.Abs(sum-res.Value) > 1e-10*math.Abs(res.Value) {
		t.Errorf("blocks sum to %g, total %g", sum, res.Value)
	}
	if res.HVPs != 40 || res.Probes != 40 {
		t.Errorf("HVPs %d probes %d, want 40", res.HVPs, res.Probes)
	}
	ev, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 5, Order: Magnitude, KeepVectors: true, Tol: 1e-10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, _, err := Trace(ctx, tm.op, TraceOptions{Blocks: blocks, Deflate: ev.Vectors}, nil)
	if err != nil {
		t.Fatal(err)
	}
	truth := floats.Sum(l)
	if math.Abs(d.Value-truth) > 1e-8 || d.StdErr > 1e-8 || d.Method != MethodHutchPP {
		t.Errorf("deflated trace of a rank-5 matrix: %g ± %g (%s), want %g exactly", d.Value, d.StdErr, d.Method, truth)
	}
	for i, b := range d.Blocks {
		bt := trueTrace(tm.sym, blocks[i].Offset, blocks[i].Offset+blocks[i].Len)
		if math.Abs(b.Value-bt) > 1e-8 {
			t.Errorf("deflated block %s = %g, want %g", b.Name, b.Value, bt)
		}
	}
	if d.HVPs != 5+d.Probes || d.Deflated != 5 {
		t.Errorf("HVPs %d for %d probes and 5 deflation vectors", d.HVPs, d.Probes)
	}
	// Products supplied by the caller save the deflation HVPs and give the
	// same estimate.
	prods := make([][]float64, len(ev.Vectors))
	for i, v := range ev.Vectors {
		prods[i] = make([]float64, n)
		if err := tm.op.Apply(prods[i], v); err != nil {
			t.Fatal(err)
		}
	}
	d2, _, err := Trace(ctx, tm.op, TraceOptions{Blocks: blocks, Deflate: ev.Vectors, DeflateProducts: prods}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d2.HVPs != d2.Probes || math.Abs(d2.Value-d.Value) > 1e-9 {
		t.Errorf("with products: %d HVPs, value %g vs %g", d2.HVPs, d2.Value, d.Value)
	}
	// Hutch++ with its own sketch also captures a low-rank matrix exactly.
	s, _, err := Trace(ctx, tm.op, TraceOptions{SketchRank: 6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(s.Value-truth) > 1e-8 || s.HVPs != 6+s.Deflated+s.Probes {
		t.Errorf("sketched Hutch++: %g ± %g in %d HVPs, want %g", s.Value, s.StdErr, s.HVPs, truth)
	}
}

func TestTraceErrors(t *testing.T) {
	tm := newTestMatrix(hessianSpectrum(50, 1), 1)
	ctx := context.Background()
	if _, _, err := Trace(ctx, tm.op, TraceOptions{Blocks: []Block{{"z", 40, 20}}}, nil); err == nil {
		t.Error("out-of-range block accepted")
	}
	if _, _, err := Trace(ctx, tm.op, TraceOptions{Deflate: [][]float64{make([]float64, 50)}, SketchRank: 2}, nil); err == nil {
		t.Error("Deflate with SketchRank accepted")
	}
	if _, _, err := Trace(ctx, tm.op, TraceOptions{Deflate: [][]float64{make([]float64, 49)}}, nil); !errors.Is(err, hvp.ErrDim) {
		t.Errorf("short deflation vector: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := Trace(cctx, tm.op, TraceOptions{}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// drift is a slowly changing sequence A_t = A + t·δ·‖A‖·E, E symmetric
// random with unit spectral norm.
type drift struct {
	base *testMatrix
	e    *mat.SymDense
	step float64
}

func newDrift(n int, seed uint64, step float64) *drift {
	tm := newTestMatrix(hessianSpectrum(n, seed), seed+1)
	rng := rand.New(rand.NewPCG(seed, 77))
	e := mat.NewSymDense(n, nil)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			e.SetSym(i, j, rng.NormFloat64()/(2*math.Sqrt(float64(n))))
		}
	}
	return &drift{base: tm, e: e, step: step * 10}
}

func (d *drift) at(t int) (*hvp.Dense, float64) {
	n := d.e.SymmetricDim()
	s := mat.NewSymDense(n, nil)
	s.AddSym(d.base.sym, scaledSym(d.e, d.step*float64(t)))
	return hvp.NewDense(s), trueTrace(s, 0, n)
}

func scaledSym(a *mat.SymDense, c float64) *mat.SymDense {
	n := a.SymmetricDim()
	s := mat.NewSymDense(n, nil)
	s.ScaleSym(c, a)
	return s
}

func TestTraceTracking(t *testing.T) {
	const n, steps, budget = 120, 16, 20
	ctx := context.Background()
	var ratioSum float64
	covered, total := 0, 0
	seqs := 200
	if raceEnabled || testing.Short() {
		seqs = 40
	}
	var lastTracked, lastPlain float64
	methods := map[string]int{}
	for seq := 0; seq < seqs; seq++ {
		d := newDrift(n, uint64(seq%4), 1e-3)
		var warm *TraceWarm
		for s := 0; s < steps; s++ {
			op, truth := d.at(s)
			opt := TraceOptions{RelTol: -1, MaxHVPs: budget, Seed: uint64(1000*seq + s)}
			res, nw, err := Trace(ctx, op, opt, warm)
			if err != nil {
				t.Fatal(err)
			}
			warm = nw
			lo, hi := res.CI(0.95)
			total++
			if lo <= truth && truth <= hi {
				covered++
			}
			if s == steps-1 {
				methods[res.Method]++
				opt.NoTracking = true
				opt.Seed += 1 << 40
				plain, _, err := Trace(ctx, op, opt, nil)
				if err != nil {
					t.Fatal(err)
				}
				if plain.HVPs != res.HVPs {
					t.Fatalf("unequal budgets %d vs %d", plain.HVPs, res.HVPs)
				}
				ratioSum += res.StdErr / plain.StdErr
				lastTracked, lastPlain = res.StdErr, plain.StdErr
			}
		}
	}
	ratio := ratioSum / float64(seqs)
	cov := float64(covered) / float64(total)
	t.Logf("after %d steps at %d HVPs each: tracked/independent stderr = %.3f (e.g. %.3g vs %.3g); 95%% CI coverage %.1f%% over %d estimates; methods %v",
		steps, budget, ratio, lastTracked, lastPlain, 100*cov, total, methods)
	if ratio > 0.5 {
		t.Errorf("tracked/independent stderr %.3f, want ≤ 0.5", ratio)
	}
	if cov < 0.90 {
		t.Errorf("tracked CI coverage %.3f, want ≥ 0.90", cov)
	}
}

func TestTraceTrackingFastChange(t *testing.T) {
	// When the matrix changes a lot, tracking must not hurt: the estimator
	// falls back to plain Hutchinson and stays calibrated.
	const n, steps = 100, 8
	ctx := context.Background()
	covered, total := 0, 0
	seqs := 60
	if raceEnabled || testing.Short() {
		seqs = 20
	}
	for seq := 0; seq < seqs; seq++ {
		d := newDrift(n, uint64(seq%3), 0.3)
		var warm *TraceWarm
		for s := 0; s < steps; s++ {
			op, truth := d.at(s)
			res, nw, err := Trace(ctx, op, TraceOptions{RelTol: -1, MaxHVPs: 30, Seed: uint64(seq*100 + s)}, warm)
			if err != nil {
				t.Fatal(err)
			}
			warm = nw
			lo, hi := res.CI(0.95)
			total++
			if lo <= truth && truth <= hi {
				covered++
			}
		}
	}
	cov := float64(covered) / float64(total)
	t.Logf("fast change: coverage %.1f%% over %d", 100*cov, total)
	if cov < 0.90 {
		t.Errorf("coverage %.3f", cov)
	}
}

func TestTraceTrackingDeflated(t *testing.T) {
	// Deflation and tracking combine: the remainder (I−QQᵀ)H(I−QQᵀ) is
	// tracked while Q follows the warm-started top eigenvectors.
	const n, steps, budget, k = 120, 10, 26, 6
	ctx := context.Background()
	covered, total := 0, 0
	methods := map[string]int{}
	var ratio float64
	seqs := 100
	if raceEnabled || testing.Short() {
		seqs = 40
	}
	for seq := 0; seq < seqs; seq++ {
		d := newDrift(n, uint64(seq%4), 1e-3)
		var tw *TraceWarm
		var ew *EigenWarm
		for s := 0; s < steps; s++ {
			op, truth := d.at(s)
			ev, nw, err := TopEigen(ctx, op, EigenOptions{K: k, KeepVectors: true, KeepProducts: true}, ew)
			if err != nil {
				t.Fatal(err)
			}
			ew = nw
			opt := TraceOptions{RelTol: -1, MaxHVPs: budget, Seed: uint64(1000*seq + s), Deflate: ev.Vectors, DeflateProducts: ev.Products}
			res, ntw, err := Trace(ctx, op, opt, tw)
			if err != nil {
				t.Fatal(err)
			}
			tw = ntw
			lo, hi := res.CI(0.95)
			total++
			if lo <= truth && truth <= hi {
				covered++
			}
			if s == steps-1 {
				methods[res.Method]++
				opt.NoTracking = true
				plain, _, err := Trace(ctx, op, opt, nil)
				if err != nil {
					t.Fatal(err)
				}
				ratio += res.StdErr / plain.StdErr / float64(seqs)
			}
		}
	}
	cov := float64(covered) / float64(total)
	t.Logf("deflated tracking: coverage %.1f%% over %d, stderr vs untracked hutch++ %.3f, methods %v", 100*cov, total, ratio, methods)
	if cov < 0.9 || methods[MethodDeltaShiftPP] < seqs/2 || ratio > 0.8 {
		t.Errorf("coverage %.3f, methods %v, ratio %.3f", cov, methods, ratio)
	}
}

// TestTraceDeflateDependent: a deflation set with nothing in it (a zero
// vector, dropped as dependent) leaves plain Hutchinson, with blocks,
// exactly as without deflation.
func TestTraceDeflateDependent(t *testing.T) {
	ctx := context.Background()
	tm := newTestMatrix(hessianSpectrum(60, 2), 3)
	blocks := []Block{{Name: "a", Offset: 0, Len: 25}, {Name: "b", Offset: 25, Len: 35}}
	opt := TraceOptions{RelTol: -1, MaxHVPs: 30, Seed: 9, Blocks: blocks}
	want, _, err := Trace(ctx, tm.op, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt.Deflate = [][]float64{make([]float64, 60)}
	got, _, err := Trace(ctx, tm.op, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Deflated != 0 || math.Abs(got.Value-want.Value) > 1e-12*math.Abs(want.Value) {
		t.Errorf("deflated by nothing: %v (rank %d), plain %v", got.Value, got.Deflated, want.Value)
	}
	for i := range blocks {
		if math.Abs(got.Blocks[i].Value-want.Blocks[i].Value) > 1e-12*math.Abs(want.Value) {
			t.Errorf("block %d: %v, plain %v", i, got.Blocks[i].Value, want.Blocks[i].Value)
		}
	}
}
