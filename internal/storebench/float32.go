package storebench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
)

// Float32Config describes the float32 resume experiment.
type Float32Config struct {
	// N is the matrix size (default 600), K the eigenpairs (default 5).
	N, K int
	// Drift is ‖H1 − H0‖ relative to ‖H0‖ between the probe that saved the
	// state and the resumed one (default 1e-3; 0: the same matrix).
	Drift float64
	// Tol is the residual tolerance relative to ‖H‖ (default 1e-4, the
	// monitor's EigenTol).
	Tol  float64
	Seed uint64
}

// Float32Result compares a top-K solve resumed from a float64 warm state,
// from the same state rounded to float32, and cold. Errors are the largest
// |λ̂ − λ| / |λ1| against the dense eigendecomposition of the matrix.
type Float32Result struct {
	N     int     `json:"n"`
	K     int     `json:"k"`
	Drift float64 `json:"drift"`
	Tol   float64 `json:"tol"`

	ColdHVPs      int     `json:"cold_hvps"`
	Warm64HVPs    int     `json:"warm_float64_hvps"`
	Warm32HVPs    int     `json:"warm_float32_hvps"`
	ColdError     float64 `json:"cold_rel_error"`
	Warm64Error   float64 `json:"warm_float64_rel_error"`
	Warm32Error   float64 `json:"warm_float32_rel_error"`
	Warm32Rounded float64 `json:"float32_vector_rounding"` // largest ‖v − fl32(v)‖
}

// Float32Resume measures what resuming from float32-rounded eigenvectors
// costs. H0 has a Hessian-like spectrum (K separated outliers over a bulk
// around zero) in a random basis; H1 = H0 + Drift·‖H0‖·E with E a random
// symmetric matrix of unit norm. The warm state comes from a solve on H0,
// the three solves run on H1 to the same tolerance.
func Float32Resume(ctx context.Context, cfg Float32Config) (Float32Result, error) {
	if cfg.N == 0 {
		cfg.N = 600
	}
	if cfg.K == 0 {
		cfg.K = 5
	}
	if cfg.Drift == 0 {
		cfg.Drift = 1e-3
	} else if cfg.Drift < 0 {
		cfg.Drift = 0
	}
	if cfg.Tol == 0 {
		cfg.Tol = 1e-4
	}
	n, k := cfg.N, cfg.K
	if k >= n/4 {
		return Float32Result{}, fmt.Errorf("storebench: K=%d too large for N=%d", k, n)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 77))
	// Random orthogonal basis.
	g := mat.NewDense(n, n, nil)
	for i := range n {
		for j := range n {
			g.Set(i, j, rng.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(g)
	var q mat.Dense
	qr.QTo(&q)
	lam := make([]float64, n)
	for i := range n {
		switch {
		case i < k:
			lam[i] = 10 * math.Pow(0.9, float64(i))
		default:
			lam[i] = 4*rng.Float64() - 0.5
		}
	}
	h0 := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			var s float64
			for l := range n {
				s += q.At(i, l) * lam[l] * q.At(j, l)
			}
			h0.SetSym(i, j, s)
		}
	}
	// H1 = H0 + Drift·‖H0‖·E, ‖E‖₂ ≈ 1 (a Wigner matrix scaled by 1/(2√n)).
	h1 := mat.NewSymDense(n, nil)
	scale := cfg.Drift * lam[0] / (2 * math.Sqrt(float64(n)))
	for i := range n {
		for j := i; j < n; j++ {
			h1.SetSym(i, j, h0.At(i, j)+scale*rng.NormFloat64())
		}
	}
	var es mat.EigenSym
	if !es.Factorize(h1, false) {
		return Float32Result{}, fmt.Errorf("storebench: dense eigendecomposition failed")
	}
	truth := es.Values(nil)
	slices.Reverse(truth) // descending

	opt := estimators.EigenOptions{K: k, Tol: cfg.Tol, MaxHVPs: 20 * n, Seed: cfg.Seed + 1}
	_, w64, err := estimators.TopEigen(ctx, hvp.NewDense(h0), opt, nil)
	if err != nil {
		return Float32Result{}, err
	}
	w32 := &estimators.EigenWarm{Values: slices.Clone(w64.Values)}
	res := Float32Result{N: n, K: k, Drift: cfg.Drift, Tol: cfg.Tol}
	for _, v := range w64.Vectors {
		r := make([]float64, len(v))
		var d2 float64
		for i, x := range v {
			r[i] = float64(float32(x))
			d2 += (r[i] - x) * (r[i] - x)
		}
		res.Warm32Rounded = max(res.Warm32Rounded, math.Sqrt(d2))
		w32.Vectors = append(w32.Vectors, r)
	}
	relErr := func(vals []float64) float64 {
		var e float64
		for i, v := range vals {
			e = max(e, math.Abs(v-truth[i])/math.Abs(truth[0]))
		}
		return e
	}
	op := hvp.NewDense(h1)
	for _, c := range []struct {
		warm *estimators.EigenWarm
		hvps *int
		err  *float64
	}{{nil, &res.ColdHVPs, &res.ColdError}, {w64, &res.Warm64HVPs, &res.Warm64Error}, {w32, &res.Warm32HVPs, &res.Warm32Error}} {
		r, _, err := estimators.TopEigen(ctx, op, opt, c.warm)
		if err != nil {
			return res, err
		}
		*c.hvps, *c.err = r.HVPs, relErr(r.Values)
	}
	return res, nil
}
