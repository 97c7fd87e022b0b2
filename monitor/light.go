package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// LightWarm is the warm state of light probes: the tracked pairs of λ1,
// λmin (as λ1 of λ1·I − H) and λ1(P⁻¹H), each with the vector of the probe
// before, from which the next solve extrapolates. It is kept apart from
// the full probe's state, so that light probes change no full probe.
type LightWarm struct {
	Max, Precond *estimators.EigenWarm
	Min          *shiftedWarm
}

// Light probe defaults: the tracking mode's relative residual, and the
// warm products after which a tracked pair counts as lost and its solve
// restarts cold.
const (
	defaultLightTol   = 1e-3
	lightWarmMaxHVPs  = 10
	lightMinWarmHVPs  = 8
	lightMaxHVPsShare = 4 // a light probe may use MaxHVPs/4
)

// AnalyzeLight is the light probe: λ1 and λmin of op, each to a residual
// of Config.LightTol·λ1 (default 1e-3), and λ1(P⁻¹H) to LightTol relative
// to itself when in.Preconditioner is set, each warm-started from warm and
// extrapolated, with a cold restart when a warm solve needs more than 10
// products. It writes Eigenvalues (λ1 alone), Residuals, LambdaMin,
// PreconditionedLambda1 and Warm of dst, and returns the next warm state.
func AnalyzeLight(ctx context.Context, dst *snapshot.Snapshot, op hvp.Operator, cfg Config, in Inputs, warm *LightWarm) (*LightWarm, Cost, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, Cost{}, err
	}
	if warm == nil {
		warm = new(LightWarm)
	}
	if in.Cold {
		warm = &LightWarm{}
	}
	next := new(LightWarm)
	var cost Cost
	limit := max(lightWarmMaxHVPs+20, cfg.MaxHVPs/lightMaxHVPsShare)
	eo := func(seed uint64, tol float64) estimators.EigenOptions {
		return estimators.EigenOptions{K: 1, Tol: tol, MaxHVPs: limit - cost.Total(), Seed: seed, WarmMaxHVPs: lightWarmMaxHVPs}
	}
	top, w, err := estimators.TopEigen(ctx, op, eo(cfg.Seed+5, cfg.LightTol), warm.Max)
	cost.Eigen += top.HVPs
	if err != nil {
		return nil, cost, fmt.Errorf("light λ1: %w", err)
	}
	next.Max = w
	l1 := top.Values[0]
	dst.Eigenvalues, dst.Residuals = top.Values, top.Residuals
	dst.Warm = top.Warm

	// λmin is σ − λ1(σI − H) with σ = λ1: the shifted operator's norm is
	// λ1 − λmin, so its relative tolerance is a residual bound in units of
	// λ1, as for λ1 (‖(σI−H)v − μv‖ = ‖Hv − (σ−μ)v‖). Its Krylov spaces
	// are −H's, so the shift costs no products.
	prevMin := 0.0
	if w := warm.Min; w != nil && len(w.Values) > 0 {
		prevMin = w.shift() - w.Values[0]
	}
	tol := cfg.LightTol
	if l1 > 0 {
		tol = cfg.LightTol * l1 / (l1 + math.Abs(prevMin))
	}
	// λmin's eigenvector sits at the edge of the spectrum's dense bulk and
	// turns more between probes than λ1's, so a warm solve does not restart
	// cold but stops after lightMinWarmHVPs: it reports the λmin reached
	// with its computed residual (above LightTol·λ1 until the tracked vector
	// has caught up), and the next probe goes on from the better vector.
	mo := eo(cfg.Seed+6, tol)
	mo.WarmMaxHVPs = 0
	if warm.Min.eigen() != nil {
		mo.MaxHVPs = min(mo.MaxHVPs, lightMinWarmHVPs)
	}
	low, w, err := estimators.TopEigen(ctx, shifted{op, l1}, mo, warm.Min.eigen())
	cost.Eigen += low.HVPs
	if err != nil && !(errors.Is(err, estimators.ErrNotConverged) && len(low.Values) > 0 && w != nil) {
		return nil, cost, fmt.Errorf("light λmin: %w", err)
	}
	next.Min = &shiftedWarm{EigenWarm: w, Shift: l1}
	dst.LambdaMin = &snapshot.Eigenpair{Value: l1 - low.Values[0], Residual: low.Residuals[0]}
	dst.Warm = dst.Warm && low.Warm

	if in.Preconditioner != nil {
		pop, err := hvp.NewInversePreconditioned(op, in.Preconditioner)
		if err != nil {
			return nil, cost, fmt.Errorf("light preconditioned sharpness: %w", err)
		}
		res, w, err := estimators.TopEigen(ctx, pop, eo(cfg.Seed+7, cfg.LightTol), warm.Precond)
		cost.Preconditioned = res.HVPs
		if err != nil {
			return nil, cost, fmt.Errorf("light preconditioned sharpness: %w", err)
		}
		next.Precond = w
		dst.PreconditionedLambda1 = &snapshot.Eigenpair{Value: res.Values[0], Residual: res.Residuals[0]}
	}
	return next, cost, nil
}

// shifted is σI − H.
type shifted struct {
	op    hvp.Operator
	sigma float64
}

func (o shifted) Dim() int { return o.op.Dim() }

func (o shifted) Apply(dst, v []float64) error {
	if err := o.op.Apply(dst, v); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = o.sigma*v[i] - dst[i]
	}
	return nil
}

// shiftedWarm is the warm state of the λmin solve, with the shift its
// values are relative to.
type shiftedWarm struct {
	*estimators.EigenWarm
	Shift float64
}

func (w *shiftedWarm) eigen() *estimators.EigenWarm {
	if w == nil {
		return nil
	}
	return w.EigenWarm
}

// shift is the σ of w's values (they are σ − λmin).
func (w *shiftedWarm) shift() float64 { return w.Shift }

// seedLight hands a full probe's top eigenvector to the light probes' λ1
// tracking, so that an eigenvalue the full probe's cold restart found is
// tracked from then on.
func seedLight(lw *LightWarm, full *estimators.Warm) *LightWarm {
	if full == nil || full.Eigen == nil || len(full.Eigen.Vectors) == 0 {
		return lw
	}
	out := &LightWarm{}
	if lw != nil {
		*out = *lw
	}
	e := full.Eigen
	if lw != nil && lw.Max != nil && len(lw.Max.Values) > 0 && lw.Max.Values[0] >= e.Values[0]*(1-1e-3) {
		return out // the light track is ahead of the full probe's
	}
	out.Max = &estimators.EigenWarm{Values: e.Values[:1:1], Vectors: e.Vectors[:1:1]}
	return out
}
