package storebench

import (
	"context"
	"testing"
)

// TestFloat32Resume: eigenvectors rounded to float32 (relative error
// ~6e-8) are as good a warm start as the float64 ones at the monitor's
// tolerance, and still far better than cold; both reach the dense truth.
func TestFloat32Resume(t *testing.T) {
	for _, c := range []Float32Config{
		{N: 400, Drift: 1e-3},
		{N: 400, Drift: -1},             // the same matrix: an exact resume
		{N: 400, Drift: -1, Tol: 1e-10}, // a tolerance near float32's precision
	} {
		r, err := Float32Resume(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", r)
		for name, e := range map[string]float64{"cold": r.ColdError, "warm64": r.Warm64Error, "warm32": r.Warm32Error} {
			if e > r.Tol {
				t.Errorf("drift %g tol %g: %s eigenvalues off by %.3g relative, want ≤ %g", r.Drift, r.Tol, name, e, r.Tol)
			}
		}
		if r.Warm32Rounded > 1e-6 || r.Warm32Rounded == 0 {
			t.Errorf("float32 rounding moved a unit vector by %g", r.Warm32Rounded)
		}
		if r.Warm64HVPs >= r.ColdHVPs || r.Warm32HVPs >= r.ColdHVPs {
			t.Errorf("warm starts (%d, %d HVPs) no cheaper than cold (%d)", r.Warm64HVPs, r.Warm32HVPs, r.ColdHVPs)
		}
		if r.Tol >= 1e-6 && r.Warm32HVPs > r.Warm64HVPs+2*r.K {
			t.Errorf("float32 warm start took %d HVPs, float64 %d", r.Warm32HVPs, r.Warm64HVPs)
		}
	}
}
