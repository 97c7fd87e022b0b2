package gomlx

import (
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
)

// TestHVPMatchesCentralDifferences checks H·v against central differences
// of the operator's own gradient, and the symmetry uᵀHv = vᵀHu, for every
// supported layer kind.
func TestHVPMatchesCentralDifferences(t *testing.T) {
	backend := newBackend(t)
	for _, m := range testModels() {
		t.Run(m.name, func(t *testing.T) {
			ctx, _ := m.trained(t, backend, 2)
			op := m.operator(t, ctx)
			n := op.Dim()
			r := rand.New(rand.NewPCG(3, 4))
			v, u := randFloats(r, n), randFloats(r, n)
			hv, hu := make([]float64, n), make([]float64, n)
			if err := op.Apply(hv, v); err != nil {
				t.Fatal(err)
			}
			if err := op.Apply(hu, u); err != nil {
				t.Fatal(err)
			}
			if sym := abs(dot(u, hv)-dot(v, hu)) / (norm(u) * norm(hv)); sym > 1e-12 {
				t.Errorf("uᵀHv = %.15g, vᵀHu = %.15g: relative asymmetry %.2g", dot(u, hv), dot(v, hu), sym)
			}
			// Central differences of the adapter's gradient along v.
			theta := make([]float64, n)
			if err := op.Params(theta); err != nil {
				t.Fatal(err)
			}
			const eps = 1e-5
			gp, gm := make([]float64, n), make([]float64, n)
			shifted := make([]float64, n)
			for i := range theta {
				shifted[i] = theta[i] + eps*v[i]
			}
			must(t, op.SetParams(shifted))
			if _, err := op.Gradient(gp); err != nil {
				t.Fatal(err)
			}
			for i := range theta {
				shifted[i] = theta[i] - eps*v[i]
			}
			must(t, op.SetParams(shifted))
			if _, err := op.Gradient(gm); err != nil {
				t.Fatal(err)
			}
			must(t, op.SetParams(theta))
			fd := make([]float64, n)
			for i := range fd {
				fd[i] = (gp[i] - gm[i]) / (2 * eps)
			}
			// Central differences err by O(eps²·‖∇³L‖) + O(ulp/eps): ~1e-9 here.
			if d := relDiff(hv, fd); d > 1e-7 || norm(hv) == 0 {
				t.Errorf("‖Hv − FD‖/‖FD‖ = %.2g (‖Hv‖ = %.4g), want ≤ 1e-7", d, norm(hv))
			} else {
				t.Logf("dim %d: ‖Hv − FD‖/‖FD‖ = %.2g, asymmetry ok", n, d)
			}
			// The operator must be back at θ: the same product again.
			again := make([]float64, n)
			must(t, op.Apply(again, v))
			if d := relDiff(again, hv); d != 0 {
				t.Errorf("Apply not deterministic after SetParams round trip: %.2g", d)
			}
		})
	}
}

// TestFastVJPMatchesStock builds every test model's HVP twice: with this
// package's Dot/DotGeneral VJPs and with GoMLX's own, and compares.
func TestFastVJPMatchesStock(t *testing.T) {
	backend := newBackend(t)
	for _, m := range testModels() {
		t.Run(m.name, func(t *testing.T) {
			ctx, _ := m.trained(t, backend, 1)
			fast := m.operator(t, ctx) // TestMain opted in
			graph.VJPRegistration[graph.NodeTypeDot] = stockDotVJP
			graph.VJPRegistration[graph.NodeTypeDotGeneral] = stockDotGeneralVJP
			defer UseFastVJPs()
			stock := m.operator(t, ctx)
			n := fast.Dim()
			v := randFloats(rand.New(rand.NewPCG(5, 6)), n)
			a, b := make([]float64, n), make([]float64, n)
			must(t, fast.Apply(a, v))
			must(t, stock.Apply(b, v))
			if d := relDiff(a, b); d > 1e-12 {
				t.Errorf("fast vs stock VJP: relative difference %.2g", d)
			}
			ga, gb := make([]float64, n), make([]float64, n)
			if _, err := fast.Gradient(ga); err != nil {
				t.Fatal(err)
			}
			if _, err := stock.Gradient(gb); err != nil {
				t.Fatal(err)
			}
			if d := relDiff(ga, gb); d > 1e-12 {
				t.Errorf("fast vs stock gradient: relative difference %.2g", d)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFrozenAndRefresh: the operator does not move while training does;
// Refresh moves it to the live variables without rebuilding the graph, and
// then agrees bitwise with a freshly made operator.
func TestFrozenAndRefresh(t *testing.T) {
	for _, m := range testModels() {
		if m.name != "dense-l2" && m.name != "attention" {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			backend := newBackend(t)
			ctx, tr := m.trained(t, backend, 1)
			op := m.operator(t, ctx)
			n := op.Dim()
			v := randFloats(rand.New(rand.NewPCG(7, 7)), n)
			before, after := make([]float64, n), make([]float64, n)
			must(t, op.Apply(before, v))
			loss0 := op.Loss()
			for range 5 {
				_, err := tr.TrainStep(nil, m.inputs, m.labels)
				must(t, err)
			}
			must(t, op.Apply(after, v))
			if relDiff(after, before) != 0 || op.Loss() != loss0 {
				t.Fatal("the frozen operator moved with training")
			}
			must(t, op.Refresh(ctx))
			must(t, op.Apply(after, v))
			if relDiff(after, before) == 0 || op.Loss() == loss0 {
				t.Fatal("Refresh did not move the operator")
			}
			fresh := m.operator(t, ctx)
			want := make([]float64, n)
			must(t, fresh.Apply(want, v))
			for i := range want {
				if want[i] != after[i] {
					t.Fatalf("refreshed H·v[%d] = %v, fresh operator %v", i, after[i], want[i])
				}
			}
			if op.Loss() != fresh.Loss() {
				t.Errorf("refreshed loss %v, fresh %v", op.Loss(), fresh.Loss())
			}
			if op.hvpBuilds != 1 {
				t.Errorf("HVP graph built %d times, want 1", op.hvpBuilds)
			}
		})
	}
}
