package estimators

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
)

// spectrum cases with known eigenvalues.
func eigenCases() []struct {
	name   string
	lambda []float64
} {
	const n = 240
	rng := rand.New(rand.NewPCG(11, 12))
	uni := func(lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }
	var cases []struct {
		name   string
		lambda []float64
	}
	add := func(name string, l []float64) {
		cases = append(cases, struct {
			name   string
			lambda []float64
		}{name, l})
	}

	// Indefinite: a few positive outliers, a bulk straddling zero and a
	// negative tail.
	l := make([]float64, n)
	for i := range l {
		l[i] = uni(-3, 2)
	}
	copy(l, []float64{9, 7.5, 6.8, 6.1, 5.5, -8, -6.5})
	add("indefinite", l)

	// ±λ near-tie: λmax = 10, λmin = −10(1−1e-6).
	l = make([]float64, n)
	for i := range l {
		l[i] = uni(-5, 5)
	}
	copy(l, []float64{10, -10 * (1 - 1e-6), 8, -7.5, 6.9})
	add("plusminus", l)

	// Clustered: five eigenvalues within 4e-4 relative at the top.
	l = make([]float64, n)
	for i := range l {
		l[i] = uni(-2, 6)
	}
	copy(l, []float64{10, 10 - 1e-3, 10 - 2e-3, 10 - 3e-3, 10 - 4e-3, 8})
	add("clustered", l)

	// Degenerate: λ1 = λ2 = λ3 exactly, then a double eigenvalue.
	l = make([]float64, n)
	for i := range l {
		l[i] = uni(-3, 3)
	}
	copy(l, []float64{5, 5, 5, 4, 3.5, 3.5})
	add("degenerate", l)

	// Rank-deficient and positive semi-definite: rank 8.
	l = make([]float64, n)
	copy(l, []float64{6, 5, 4.5, 4, 3, 2, 1, 0.5})
	add("rankdeficient", l)

	// Rank-deficient and indefinite: most of the spectrum is zero.
	l = make([]float64, n)
	copy(l, []float64{4, 3, -3.5, -2, 1})
	add("rankdeficient-indefinite", l)
	return cases
}

func TestTopEigenKnownSpectra(t *testing.T) {
	ctx := context.Background()
	for _, tc := range eigenCases() {
		tm := newTestMatrix(tc.lambda, 5)
		norm := math.Max(math.Abs(slices.Max(tc.lambda)), math.Abs(slices.Min(tc.lambda)))
		asc := slices.Clone(tc.lambda)
		slices.Sort(asc)
		for _, order := range []Order{Algebraic, Magnitude} {
			for _, k := range []int{1, 3, 6} {
				opt := EigenOptions{K: k, Order: order, Tol: 1e-8, KeepVectors: true, KeepProducts: true, Seed: 3, MaxHVPs: 2000}
				res, _, err := TopEigen(ctx, tm.op, opt, nil)
				if err != nil {
					t.Fatalf("%s %v k=%d: %v", tc.name, order, k, err)
				}
				if !res.Converged {
					t.Errorf("%s %v k=%d: not converged", tc.name, order, k)
				}
				want := pick(asc, order, k)
				checkEigen(t, tc.name, tm, asc, norm, res, want)
			}
		}
	}
}

// checkEigen compares a result with the truth and checks its certificates.
func checkEigen(t *testing.T, name string, tm *testMatrix, asc []float64, norm float64, res EigenResult, want []float64) {
	t.Helper()
	n := tm.sym.SymmetricDim()
	hx := make([]float64, n)
	for i, got := range res.Values {
		err := math.Abs(got - want[i])
		if err > 1e-8*norm {
			t.Errorf("%s: λ%d = %.15g, want %.15g (rel err %.2g)", name, i+1, got, want[i], err/norm)
		}
		r := res.Residuals[i]
		// Some eigenvalue lies within r of got; the matched one must.
		nearest := math.Inf(1)
		for _, l := range asc {
			nearest = math.Min(nearest, math.Abs(l-got))
		}
		if nearest > r+1e-13*norm {
			t.Errorf("%s: λ%d = %g has no eigenvalue within its residual %g (nearest %g)", name, i+1, got, r, nearest)
		}
		// Gap bound |θ−λ| ≤ r²/gap with the gap to the other distinct eigenvalues.
		gap := math.Inf(1)
		for _, l := range asc {
			if math.Abs(l-want[i]) > 1e-9*norm {
				gap = math.Min(gap, math.Abs(l-got))
			}
		}
		if err > r*r/gap+1e-13*norm {
			t.Errorf("%s: λ%d error %g exceeds r²/gap = %g", name, i+1, err, r*r/gap)
		}
		// The reported residual is the true one.
		x := res.Vectors[i]
		if d := math.Abs(floats.Norm(x, 2) - 1); d > 1e-12 {
			t.Errorf("%s: vector %d has norm 1%+g", name, i+1, d)
		}
		if err := tm.op.Apply(hx, x); err != nil {
			t.Fatal(err)
		}
		if res.Products != nil {
			d := make([]float64, n)
			floats.SubTo(d, hx, res.Products[i])
			if e := floats.Norm(d, 2); e > 1e-12*norm {
				t.Errorf("%s: product %d off by %g", name, i+1, e)
			}
		}
		floats.AddScaled(hx, -got, x)
		if true := floats.Norm(hx, 2); math.Abs(true-r) > 1e-11*norm {
			t.Errorf("%s: λ%d reported residual %g, true %g", name, i+1, r, true)
		}
		for j := 0; j < i; j++ {
			if d := math.Abs(floats.Dot(x, res.Vectors[j])); d > 1e-10 {
				t.Errorf("%s: vectors %d and %d not orthogonal: %g", name, i+1, j+1, d)
			}
		}
	}
	// Sorted in the requested order.
	for i := 1; i < len(want); i++ {
		if !(want[i-1] >= want[i]) && !(math.Abs(want[i-1]) >= math.Abs(want[i])) {
			t.Errorf("%s: truth not sorted", name)
		}
	}
}

func TestTopEigenDefaultTolerance(t *testing.T) {
	// At the default residual tolerance, isolated eigenvalues are still
	// accurate to ≤ 1e-8 relative because the error is quadratic.
	tm := newTestMatrix(hessianSpectrum(300, 1), 2)
	res, _, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := wantedTruth(tm.lambda, Algebraic, 5)
	for i := range want {
		if e := math.Abs(res.Values[i]-want[i]) / want[0]; e > 1e-8 {
			t.Errorf("λ%d rel err %g", i+1, e)
		}
		if res.Residuals[i] > 1e-6*res.NormEstimate {
			t.Errorf("residual %d = %g above tolerance", i, res.Residuals[i])
		}
	}
}

// hessianSpectrum mimics a training Hessian: ten outliers above a bulk
// near zero with some negative mass.
func hessianSpectrum(n int, seed uint64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 1))
	l := make([]float64, n)
	out := []float64{10, 9.2, 8.7, 8.1, 7.9, 7.0, 6.1, 5.2, 4.4, 3.9}
	for i := range l {
		if i < len(out) {
			l[i] = out[i]
		} else {
			l[i] = rng.NormFloat64()*0.3 + 0.2*rng.ExpFloat64()
		}
	}
	return l
}

func TestPowerIterationFailsOnPlusMinus(t *testing.T) {
	// PyHessian's power iteration cannot separate λ and −λ: it stops on a
	// small relative change with a value that is no eigenvalue, and its
	// residual says so. TopEigen gets both ends.
	const n = 200
	l := make([]float64, n)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range l {
		l[i] = 4 * (2*rng.Float64() - 1)
	}
	l[0], l[1] = 10, -10*(1-1e-6)
	tm := newTestMatrix(l, 3)
	ctx := context.Background()
	pw, err := PowerIteration(ctx, tm.op, PowerOptions{K: 1, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	errPow := math.Min(math.Abs(pw.Values[0]-10), math.Abs(pw.Values[0]+10*(1-1e-6)))
	t.Logf("power iteration: λ=%.6g after %d HVPs, residual %.3g, distance to ±10 %.3g", pw.Values[0], pw.HVPs, pw.Residuals[0], errPow)
	if errPow < 1e-2 {
		t.Errorf("power iteration unexpectedly found %g", pw.Values[0])
	}
	if pw.Residuals[0] < 1 {
		t.Errorf("power-iteration residual %g should expose the failure", pw.Residuals[0])
	}
	res, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 2, Order: Magnitude, Tol: 1e-8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(res.Values[0]-10) > 1e-8*10 || math.Abs(res.Values[1]+10*(1-1e-6)) > 1e-8*10 {
		t.Errorf("TopEigen magnitude: %v", res.Values)
	}
	t.Logf("TopEigen: %v in %d HVPs, residuals %.2g", res.Values, res.HVPs, res.Residuals)
}

func TestPowerIterationBias(t *testing.T) {
	// On an ordinary spectrum power iteration converges, but its 1e-3
	// relative-change rule leaves λ1 low and deflated values less accurate;
	// residuals quantify it.
	tm := newTestMatrix(hessianSpectrum(300, 2), 4)
	want := wantedTruth(tm.lambda, Algebraic, 5)
	pw, err := PowerIteration(context.Background(), tm.op, PowerOptions{K: 5, Seed: 1, KeepVectors: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range pw.Values {
		t.Logf("power λ%d=%.6f (true %.6f, rel err %.2g, residual %.2g)", i+1, v, want[i], (v-want[i])/want[i], pw.Residuals[i])
		if math.Abs(v-want[i]) > pw.Residuals[i]+1e-12 && !slices.ContainsFunc(tm.lambda, func(l float64) bool { return math.Abs(l-v) <= pw.Residuals[i] }) {
			t.Errorf("power residual %g does not cover λ%d", pw.Residuals[i], i+1)
		}
	}
	if math.Abs(pw.Values[0]-want[0])/want[0] < 1e-7 {
		t.Logf("note: power iteration λ1 happened to be accurate")
	}
	if pw.Values[0] > want[0]+1e-12 {
		t.Errorf("Rayleigh quotient %g above λ1 %g", pw.Values[0], want[0])
	}
}

func TestTopEigenWarmStart(t *testing.T) {
	ctx := context.Background()
	tm := newTestMatrix(hessianSpectrum(400, 3), 1)
	_, warm, err := TopEigen(ctx, tm.op, EigenOptions{K: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, eps := range []float64{1e-3, 1e-4, 1e-5} {
		p, exact := tm.perturbed(eps, 5)
		cold, _, err := TopEigen(ctx, p, EigenOptions{K: 5, Seed: 9}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cold1, _, err := TopEigen(ctx, p, EigenOptions{K: 5, Seed: 9, BlockSize: 1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		hot, _, err := TopEigen(ctx, p, EigenOptions{K: 5}, warm)
		if err != nil {
			t.Fatal(err)
		}
		if !hot.Warm || cold.Warm {
			t.Fatalf("warm flags: hot %v cold %v", hot.Warm, cold.Warm)
		}
		want := pick(exact, Algebraic, 5)
		for i := range want {
			if e := math.Abs(hot.Values[i]-want[i]) / want[0]; e > 1e-8 {
				t.Errorf("eps=%g warm λ%d rel err %g", eps, i+1, e)
			}
		}
		ratio := float64(hot.HVPs) / float64(cold.HVPs)
		t.Logf("eps=%g: cold %d HVPs (b=%d), cold %d HVPs (b=1), warm %d HVPs (b=%d): warm/cold %.2f, warm/cold(b=1) %.2f",
			eps, cold.HVPs, cold.BlockSize, cold1.HVPs, hot.HVPs, hot.BlockSize, ratio, float64(hot.HVPs)/float64(cold1.HVPs))
		if ratio > 0.6 {
			t.Errorf("eps=%g: warm/cold = %.2f, want ≤ 0.6", eps, ratio)
		}
	}
	// Unchanged operator: K products rebuild the old subspace and a few
	// more push the residuals below the tolerance again.
	same, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 5}, warm)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unchanged operator: %d warm HVPs", same.HVPs)
	if same.HVPs > 10 {
		t.Errorf("unchanged operator took %d warm HVPs", same.HVPs)
	}
}

func TestTopEigenWarmKeepsMultiplicity(t *testing.T) {
	// A repeated eigenvalue found cold stays resolved warm: the warm block
	// is sized by the previous cluster.
	l := eigenCases()[3].lambda // degenerate
	tm := newTestMatrix(l, 8)
	ctx := context.Background()
	_, warm, err := TopEigen(ctx, tm.op, EigenOptions{K: 5, Tol: 1e-8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, exact := tm.perturbed(1e-6, 3)
	res, _, err := TopEigen(ctx, p, EigenOptions{K: 5, Tol: 1e-8}, warm)
	if err != nil {
		t.Fatal(err)
	}
	// The warm refinement holds all previous vectors at once (it resolves
	// any multiplicity up to K); Krylov–Schur sizes its block by the cluster.
	if !res.Refined && res.BlockSize != 3 {
		t.Errorf("warm block size %d, want 3", res.BlockSize)
	}
	want := pick(exact, Algebraic, 5)
	for i := range want {
		if math.Abs(res.Values[i]-want[i]) > 1e-8*5 {
			t.Errorf("λ%d = %.12g, want %.12g", i+1, res.Values[i], want[i])
		}
	}
}

func TestTopEigenBudgetAndErrors(t *testing.T) {
	tm := newTestMatrix(hessianSpectrum(200, 4), 1)
	ctx := context.Background()
	res, w, err := TopEigen(ctx, tm.op, EigenOptions{K: 3, MaxHVPs: 12, Tol: 1e-12}, nil)
	if !errors.Is(err, ErrNotConverged) {
		t.Fatalf("want ErrNotConverged, got %v", err)
	}
	if res.Converged || res.HVPs > 12 || len(res.Values) != 3 || w == nil {
		t.Errorf("partial result: %+v", res)
	}
	// Certificates of a partial result still hold.
	for i, v := range res.Values {
		if !slices.ContainsFunc(tm.lambda, func(l float64) bool { return math.Abs(l-v) <= res.Residuals[i]*(1+1e-9) }) {
			t.Errorf("partial λ%d=%g not certified by residual %g", i+1, v, res.Residuals[i])
		}
	}
	if _, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 0}, nil); err == nil {
		t.Error("K=0 accepted")
	}
	if _, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 201}, nil); err == nil {
		t.Error("K>n accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := TopEigen(cctx, tm.op, EigenOptions{K: 2}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	// A warm state of another dimension is ignored.
	bad := &EigenWarm{Values: []float64{1}, Vectors: [][]float64{{1, 2}}}
	r2, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 2}, bad)
	if err != nil || r2.Warm {
		t.Errorf("mismatched warm: warm=%v err=%v", r2.Warm, err)
	}
	// NaN from the operator is an error, not a result.
	nan := mat.NewSymDense(3, []float64{1, 0, 0, 0, math.NaN(), 0, 0, 0, 1})
	if _, _, err := TopEigen(ctx, denseOp(nan), EigenOptions{K: 1}, nil); !errors.Is(err, ErrNonFinite) {
		t.Errorf("NaN operator: %v", err)
	}
}

func TestTopEigenSmallDimension(t *testing.T) {
	// The whole space fits in the basis: results are exact.
	tm := newTestMatrix([]float64{3, -1, 2, 2, 0.5}, 1)
	res, _, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 5, Order: Magnitude}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{3, 2, 2, -1, 0.5}
	for i := range want {
		if math.Abs(res.Values[i]-want[i]) > 1e-12 {
			t.Errorf("λ%d=%g want %g", i+1, res.Values[i], want[i])
		}
	}
}
