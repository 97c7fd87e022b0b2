package estimators

import (
	"context"
	"math"
	"testing"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/internal/krylov"
)

// TestTopEigenFromESDSubspace: started from the ESD's Lanczos basis (free
// products), the refinement finds the top-k and λmin of every spectrum kind
// (indefinite, ±λ near-tie, clustered, ...) to tolerance, against the dense
// truth, and its certificates hold: |λ − truth| ≤ residual.
func TestTopEigenFromESDSubspace(t *testing.T) {
	ctx := context.Background()
	for _, c := range eigenCases() {
		t.Run(c.name, func(t *testing.T) {
			tm := newTestMatrix(c.lambda, 21)
			asc := denseEigenvalues(tm.sym)
			esd, _, err := ESD(ctx, tm.op, ESDOptions{Probes: 1, Steps: 30, Seed: 4, KeepBasis: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The refinement takes the Lanczos basis as orthonormal
			// (Start.Orthonormal, as the monitor does for one probe).
			worst := 0.0
			for i, a := range esd.Basis {
				for j, b := range esd.Basis[:i+1] {
					d := floats.Dot(a, b)
					if i == j {
						d--
					}
					worst = math.Max(worst, math.Abs(d))
				}
			}
			if worst > 1e-13 {
				t.Errorf("Lanczos basis off orthonormal by %.2g", worst)
			}
			const tol = 1e-8
			res, _, err := TopEigen(ctx, tm.op, EigenOptions{K: 5, Tol: tol, MaxHVPs: 3000, MinTol: tol,
				Start: &krylov.Start{Basis: esd.Basis, Products: esd.Products}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			want := pick(asc, Algebraic, 5)
			for i := range want {
				err := math.Abs(res.Values[i] - want[i])
				if err > res.Residuals[i]+1e-12 || res.Residuals[i] > tol*res.NormEstimate*(1+1e-9) {
					t.Errorf("λ%d = %.12g, truth %.12g (error %.2g, residual %.2g)", i+1, res.Values[i], want[i], err, res.Residuals[i])
				}
			}
			if e := math.Abs(res.Min - asc[0]); e > res.MinResidual+1e-12 || res.MinResidual > tol*res.NormEstimate*(1+1e-9) {
				t.Errorf("λmin = %.12g, truth %.12g (error %.2g, residual %.2g)", res.Min, asc[0], e, res.MinResidual)
			}
			t.Logf("%d HVPs beyond the ESD's 30 (refined %v)", res.HVPs, res.Refined)
		})
	}
}

// TestTopEigenReportsLambdaMin: a cold Krylov–Schur solve aimed at the top
// also reports the smallest Ritz value with its residual: by interlacing it
// is an upper bound of λmin, and some eigenvalue lies within its residual.
func TestTopEigenReportsLambdaMin(t *testing.T) {
	c := eigenCases()[0] // indefinite: λmin = −8
	tm := newTestMatrix(c.lambda, 3)
	asc := denseEigenvalues(tm.sym)
	res, _, err := TopEigen(context.Background(), tm.op, EigenOptions{K: 3, Tol: 1e-6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	near := math.Inf(1)
	for _, l := range asc {
		near = math.Min(near, math.Abs(l-res.Min))
	}
	if res.Min < asc[0]-1e-12 || near > res.MinResidual+1e-12 || !(res.Min < 0) {
		t.Errorf("λmin estimate %v (residual %v): truth %v, nearest eigenvalue %v away", res.Min, res.MinResidual, asc[0], near)
	}
}

// TestTopOneTracking: the top-1 mode on a slowly changing Hessian, warm,
// to a relative residual of 1e-3, costs at most 5 HVPs per probe, and a
// warm start that has lost track (an unrelated operator) restarts cold
// within WarmMaxHVPs and still finds λ1.
func TestTopOneTracking(t *testing.T) {
	ctx := context.Background()
	tm := newTestMatrix(hessianSpectrum(300, 5), 2)
	opt := EigenOptions{K: 1, Tol: 1e-3, MaxHVPs: 500, WarmMaxHVPs: 5}
	_, warm, err := TopEigen(ctx, tm.op, opt, nil)
	if err != nil {
		t.Fatal(err)
	}
	var total, probes int
	for step := 1; step <= 20; step++ {
		p, exact := tm.perturbed(1e-4*float64(step), uint64(step))
		res, w, err := TopEigen(ctx, p, opt, warm)
		if err != nil {
			t.Fatal(err)
		}
		want := pick(exact, Algebraic, 1)[0]
		if e := math.Abs(res.Values[0] - want); e > res.Residuals[0] {
			t.Errorf("step %d: λ1 %v, truth %v, residual %v", step, res.Values[0], want, res.Residuals[0])
		}
		total += res.HVPs
		probes++
		warm = w
	}
	mean := float64(total) / float64(probes)
	t.Logf("top-1 tracking: %.2f HVPs per warm probe", mean)
	if mean > 5 {
		t.Errorf("top-1 tracking took %.2f HVPs per probe, want ≤ 5", mean)
	}
	// A warm vector of another matrix: the refinement (Lanczos from it)
	// still finds λ1; with a budget it cannot meet, the solve restarts cold.
	other := newTestMatrix(hessianSpectrum(300, 6), 9)
	truth := pick(denseEigenvalues(other.sym), Algebraic, 1)[0]
	for _, warmMax := range []int{5, 1} {
		o := opt
		o.WarmMaxHVPs = warmMax
		res, _, err := TopEigen(ctx, other.op, o, warm)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(res.Values[0]-truth) > res.Residuals[0] {
			t.Errorf("warm budget %d: λ1 %v, truth %v, residual %v", warmMax, res.Values[0], truth, res.Residuals[0])
		}
		t.Logf("warm budget %d: %d HVPs, warm %v", warmMax, res.HVPs, res.Warm)
		if warmMax == 1 && res.Warm {
			t.Error("a warm start over its budget did not restart cold")
		}
	}
}

// TestTopOneExtrapolates: when the top eigenvector turns by the same angle
// at every probe (a smoothly drifting Hessian), the top-1 mode's start from
// the extrapolation 2v_t − v_{t−1} reaches λ1 (checked against the dense
// truth) in fewer HVPs than Lanczos from v_t alone.
func TestTopOneExtrapolates(t *testing.T) {
	ctx := context.Background()
	lambda := hessianSpectrum(200, 3)
	base := newTestMatrix(lambda, 5)
	n := len(lambda)
	// H(s) = Q·R(s)·Λ·R(s)ᵀ·Qᵀ, R(s) a rotation by 0.03·s rad in the plane
	// of the top eigenvector and a bulk one.
	at := func(s int) (*hvp.Dense, float64) {
		r := mat.NewDense(n, n, nil)
		for i := range n {
			r.Set(i, i, 1)
		}
		c, sn := math.Cos(0.03*float64(s)), math.Sin(0.03*float64(s))
		r.Set(0, 0, c)
		r.Set(50, 50, c)
		r.Set(0, 50, -sn)
		r.Set(50, 0, sn)
		var qr mat.Dense
		qr.Mul(base.q, r)
		var ql, a mat.Dense
		ql.Apply(func(i, j int, v float64) float64 { return v * lambda[j] }, &qr)
		a.Mul(&ql, qr.T())
		sym := mat.NewSymDense(n, nil)
		for i := range n {
			for j := i; j < n; j++ {
				sym.SetSym(i, j, (a.At(i, j)+a.At(j, i))/2)
			}
		}
		return hvp.NewDense(sym), pick(denseEigenvalues(sym), Algebraic, 1)[0]
	}
	opt := EigenOptions{K: 1, Tol: 1e-3, MaxHVPs: 500, WarmMaxHVPs: 20}
	total := map[bool]int{}
	for _, history := range []bool{true, false} {
		op, _ := at(0)
		_, warm, err := TopEigen(ctx, op, opt, nil)
		if err != nil {
			t.Fatal(err)
		}
		for s := 1; s <= 15; s++ {
			if !history {
				warm = &EigenWarm{Values: warm.Values[:1], Vectors: warm.Vectors[:1]}
			}
			op, want := at(s)
			res, w, err := TopEigen(ctx, op, opt, warm)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(res.Values[0]-want) > res.Residuals[0] {
				t.Errorf("history %v, step %d: λ1 %v, truth %v, residual %v", history, s, res.Values[0], want, res.Residuals[0])
			}
			if s > 1 {
				total[history] += res.HVPs
			}
			warm = w
		}
	}
	t.Logf("HVPs over 14 warm probes: %d from the extrapolation, %d from v_t", total[true], total[false])
	if total[true] >= total[false] {
		t.Errorf("the extrapolated start took %d HVPs, v_t alone %d", total[true], total[false])
	}
}
