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

// extremesCheck recomputes both residuals from the returned vectors with a
// fresh product and compares both ends with the dense truth: each value
// within its residual (the certificate it claims) of the true end.
func extremesCheck(t *testing.T, label string, s *mat.SymDense, res ExtremesResult, w *ExtremesWarm, tol float64) {
	t.Helper()
	truth := denseEigenvalues(s)
	n := len(truth)
	op := hvp.NewDense(s)
	ends := []struct {
		name       string
		v          []float64
		theta, res float64
		want       float64
	}{
		{"λ1", w.Max, res.MaxValue, res.MaxResidual, truth[n-1]},
		{"λmin", w.Min, res.MinValue, res.MinResidual, truth[0]},
	}
	scale := math.Max(math.Abs(truth[0]), math.Abs(truth[n-1]))
	for _, e := range ends {
		hv := make([]float64, n)
		if err := op.Apply(hv, e.v); err != nil {
			t.Fatal(err)
		}
		nv := floats.Norm(e.v, 2)
		floats.AddScaled(hv, -e.theta, e.v)
		r := floats.Norm(hv, 2)
		if math.Abs(nv-1) > 1e-10 || math.Abs(r-e.res) > 1e-8*scale {
			t.Errorf("%s %s: ‖v‖ %.12g, recomputed residual %.3g, reported %.3g", label, e.name, nv, r, e.res)
		}
		want := e.want
		if math.IsInf(tol, 1) { // not converged: only some eigenvalue is certified
			want = truth[0]
			for _, x := range truth {
				if math.Abs(x-e.theta) < math.Abs(want-e.theta) {
					want = x
				}
			}
		}
		if d := math.Abs(e.theta - want); d > r+1e-10*scale {
			t.Errorf("%s %s: %.10g, truth %.10g: off by %.3g > residual %.3g", label, e.name, e.theta, want, d, r)
		}
		if r > tol*1.0001*scale {
			t.Errorf("%s %s: residual %.3g over tol·scale %.3g", label, e.name, r, tol*scale)
		}
	}
}

func TestExtremesMatchesDenseTruth(t *testing.T) {
	ctx := context.Background()
	for i, l := range [][]float64{
		hessianSpectrum(120, 3),
		linspace(-5, 3, 80),
		append(linspace(-0.5, 0.5, 60), 10, -10*(1-1e-3)),
	} {
		tm := newTestMatrix(l, uint64(10+i))
		res, w, err := Extremes(ctx, tm.op, ExtremesOptions{Tol: 1e-6, MaxHVPs: 400, Seed: 1}, nil)
		if err != nil {
			t.Fatalf("spectrum %d: %v", i, err)
		}
		if res.Warm || !res.Converged {
			t.Errorf("spectrum %d: %+v", i, res)
		}
		extremesCheck(t, "cold", tm.sym, res, w, 1e-6)
	}
}

// TestExtremesDriftingWarm warm-starts along H_t = H_0 + t·E and checks
// every solve against the dense truth of its own H_t.
func TestExtremesDriftingWarm(t *testing.T) {
	const n, steps, tol = 100, 30, 1e-3
	l := hessianSpectrum(n, 5)
	l[n-1] = -1.5 // a negative end clear of the bulk
	h0 := newTestMatrix(l, 7).sym
	rng := rand.New(rand.NewPCG(8, 1))
	e := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			e.SetSym(i, j, 0.01*rng.NormFloat64())
		}
	}
	ctx := context.Background()
	var warm *ExtremesWarm
	warmHVPs, warmSolves := 0, 0
	for step := range steps {
		h := mat.NewSymDense(n, nil)
		for i := range n {
			for j := i; j < n; j++ {
				h.SetSym(i, j, h0.At(i, j)+float64(step)*e.At(i, j))
			}
		}
		res, w, err := Extremes(ctx, hvp.NewDense(h), ExtremesOptions{Tol: tol, MaxHVPs: 60, Seed: 2}, warm)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if step > 0 != res.Warm {
			t.Errorf("step %d: warm %v", step, res.Warm)
		}
		extremesCheck(t, "drift", h, res, w, tol)
		if res.Warm {
			warmHVPs += res.HVPs
			warmSolves++
		}
		warm = w
	}
	t.Logf("mean warm HVPs %.2f over %d solves", float64(warmHVPs)/float64(warmSolves), warmSolves)
}

func TestExtremesCapReportsResidual(t *testing.T) {
	tm := newTestMatrix(hessianSpectrum(200, 9), 4)
	res, w, err := Extremes(context.Background(), tm.op, ExtremesOptions{Tol: 1e-12, MaxHVPs: 6, Seed: 1}, nil)
	if !errors.Is(err, ErrNotConverged) || w == nil || res.HVPs != 6 || res.Converged {
		t.Fatalf("err %v, res %+v", err, res)
	}
	extremesCheck(t, "capped", tm.sym, res, w, math.Inf(1))
}
