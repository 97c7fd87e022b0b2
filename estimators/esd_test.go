package estimators

import (
	"context"
	"math"
	"slices"
	"testing"

	"gonum.org/v1/gonum/floats"
)

func exactMoments(lambda []float64, k int) []float64 {
	m := make([]float64, k+1)
	for j := range m {
		for _, l := range lambda {
			m[j] += math.Pow(l, float64(j))
		}
		m[j] /= float64(len(lambda))
	}
	return m
}

func TestESDMoments(t *testing.T) {
	const n = 200
	tm := newTestMatrix(hessianSpectrum(n, 9), 3)
	res, _, err := ESD(context.Background(), tm.op, ESDOptions{Probes: 24, Steps: 30, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.HVPs != 24*30 || len(res.Nodes) != 24*30 || len(res.Weights) != 24*30 {
		t.Fatalf("HVPs %d, %d nodes, %d weights", res.HVPs, len(res.Nodes), len(res.Weights))
	}
	if s := floats.Sum(res.Weights); math.Abs(s-1) > 1e-12 {
		t.Errorf("weights sum to %.15g", s)
	}
	lo, hi := slices.Min(tm.lambda), slices.Max(tm.lambda)
	for _, x := range res.Nodes {
		if x < lo-1e-10 || x > hi+1e-10 {
			t.Errorf("node %g outside the spectrum [%g, %g]", x, lo, hi)
		}
	}
	// Ritz values of a long enough Lanczos run include λ1 to high accuracy.
	if d := math.Abs(slices.Max(res.Nodes) - hi); d > 1e-8 {
		t.Errorf("largest node %g, λ1 %g", slices.Max(res.Nodes), hi)
	}
	mean, se := res.Moments(4)
	want := exactMoments(tm.lambda, 4)
	for j := range want {
		t.Logf("moment %d: SLQ %.6g ± %.2g, exact %.6g", j, mean[j], se[j], want[j])
		if math.Abs(mean[j]-want[j]) > 4*se[j]+1e-12*math.Abs(want[j]) {
			t.Errorf("moment %d: %g ± %g, exact %g", j, mean[j], se[j], want[j])
		}
	}
	if se[0] > 1e-12 || math.Abs(mean[0]-1) > 1e-12 {
		t.Errorf("zeroth moment %g ± %g", mean[0], se[0])
	}
}

func TestESDMomentCoverage(t *testing.T) {
	// Across seeds, the moment intervals cover the exact moments at about
	// their nominal rate (±2 stderr ≈ 95%).
	const n = 120
	tm := newTestMatrix(hessianSpectrum(n, 2), 5)
	want := exactMoments(tm.lambda, 3)
	covered, total := 0, 0
	for seed := uint64(0); seed < 60; seed++ {
		res, _, err := ESD(context.Background(), tm.op, ESDOptions{Probes: 12, Steps: 12, Seed: seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		mean, se := res.Moments(3)
		for j := 1; j <= 3; j++ {
			total++
			if math.Abs(mean[j]-want[j]) <= 2.2*se[j] {
				covered++
			}
		}
	}
	c := float64(covered) / float64(total)
	t.Logf("moment ±2.2σ coverage %.1f%% over %d", 100*c, total)
	if c < 0.88 {
		t.Errorf("coverage %.3f", c)
	}
}

func TestESDInvariantSubspace(t *testing.T) {
	// A rank-4 matrix: Lanczos stops early, probes are padded with
	// zero-weight nodes, and the quadrature is exact for every degree.
	const n = 80
	l := make([]float64, n)
	copy(l, []float64{3, -1, 2, 0.5})
	tm := newTestMatrix(l, 1)
	res, _, err := ESD(context.Background(), tm.op, ESDOptions{Probes: 3, Steps: 20}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.HVPs >= 3*20 || len(res.Nodes) != 60 {
		t.Errorf("HVPs %d, nodes %d", res.HVPs, len(res.Nodes))
	}
	var mass float64
	for i, x := range res.Nodes {
		if res.Weights[i] > 1e-12 && !slices.ContainsFunc([]float64{3, -1, 2, 0.5, 0}, func(v float64) bool { return math.Abs(v-x) < 1e-9 }) {
			t.Errorf("node %g with weight %g is no eigenvalue", x, res.Weights[i])
		}
		mass += res.Weights[i]
	}
	if math.Abs(mass-1) > 1e-12 {
		t.Errorf("mass %g", mass)
	}
}

func TestESDDensityMatchesPyHessian(t *testing.T) {
	// A hand-made two-probe quadrature; the density must follow
	// density_generate: grid from mean(min)−0.01 to mean(max)+0.01,
	// variance 1e-5·max(1, range), unit Riemann sum.
	r := ESDResult{
		Nodes:   []float64{-1, 0.5, 4, -0.5, 1, 3},
		Weights: []float64{0.2, 0.2, 0.1, 0.1, 0.3, 0.1},
		Probes:  2, Steps: 3,
	}
	grid, dens, variance := r.Density(DensityOptions{})
	if len(grid) != 10000 || len(dens) != 10000 {
		t.Fatalf("%d grid points", len(grid))
	}
	lmin, lmax := (-1+-0.5)/2-0.01, (4+3)/2.0+0.01
	if math.Abs(grid[0]-lmin) > 1e-15 || math.Abs(grid[len(grid)-1]-lmax) > 1e-12 {
		t.Errorf("grid [%g, %g], want [%g, %g]", grid[0], grid[len(grid)-1], lmin, lmax)
	}
	if want := 1e-5 * (lmax - lmin); math.Abs(variance-want) > 1e-18 {
		t.Errorf("variance %g, want %g", variance, want)
	}
	dx := grid[1] - grid[0]
	if s := floats.Sum(dens) * dx; math.Abs(s-1) > 1e-12 {
		t.Errorf("Riemann sum %g", s)
	}
	// Spot-check one grid point against the formula.
	j := 4321
	var want float64
	for i, x := range r.Nodes {
		d := grid[j] - x
		want += r.Weights[i] * math.Exp(-d*d/(2*variance)) / math.Sqrt(2*math.Pi*variance)
	}
	raw := make([]float64, len(grid))
	if err := r.KernelDensity(raw, grid, variance); err != nil {
		t.Fatal(err)
	}
	norm := floats.Sum(raw) * dx
	if math.Abs(dens[j]-want/norm) > 1e-12*math.Max(1, want/norm) {
		t.Errorf("density[%d] = %g, want %g", j, dens[j], want/norm)
	}
	if err := r.KernelDensity(raw[:3], grid, variance); err == nil {
		t.Error("length mismatch accepted")
	}
}

func TestESDWarmCommonRandomNumbers(t *testing.T) {
	tm := newTestMatrix(hessianSpectrum(100, 1), 2)
	ctx := context.Background()
	a, warm, err := ESD(ctx, tm.op, ESDOptions{Probes: 2, Steps: 10, Seed: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A different seed in the options is overridden by the warm state.
	b, _, err := ESD(ctx, tm.op, ESDOptions{Probes: 2, Steps: 10, Seed: 6}, warm)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Warm || !slices.Equal(a.Nodes, b.Nodes) || !slices.Equal(a.Weights, b.Weights) {
		t.Error("warm ESD did not reuse the probes")
	}
	c, _, err := ESD(ctx, tm.op, ESDOptions{Probes: 2, Steps: 10, Seed: 6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a.Weights, c.Weights) {
		t.Error("different seeds gave identical probes")
	}
	if _, _, err := ESD(ctx, tm.op, ESDOptions{Probes: -1}, nil); err == nil {
		t.Error("negative probes accepted")
	}
}

func TestESDEdgeCases(t *testing.T) {
	if _, _, err := ESD(context.Background(), denseOp(nil0()), ESDOptions{}, nil); err == nil {
		t.Error("zero-dimensional operator accepted")
	}
	var r ESDResult
	if m, s := r.Moments(-3); m != nil || s != nil {
		t.Error("negative moment order")
	}
	if g, d, _ := r.Density(DensityOptions{}); g != nil || d != nil {
		t.Error("density of an empty result")
	}
}
