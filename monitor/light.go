package monitor

import (
	"context"
	"fmt"
	"math"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// LightWarm is the warm state of light probes: the tracked pairs of λ1,
// λmin (as λ1 of −H) and λ1(P⁻¹H), each with the vector of the probe
// before, from which the next solve extrapolates. It is kept apart from
// the full probe's state, so that light probes change no full probe.
type LightWarm struct {
	Max, Min, Precond *estimators.EigenWarm
}

// Light probe defaults: the tracking mode's relative residual, and the
// warm products after which a tracked pair counts as lost and its solve
// restarts cold.
const (
	defaultLightTol   = 1e-3
	lightWarmMaxHVPs  = 10
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

	// λmin is λ1 of −H. Its tolerance is relative to that solve's norm
	// estimate (at least |λmin|); scaled so that the residual bound is
	// LightTol·λ1 as for λ1.
	tol := cfg.LightTol
	if prev := warm.Min; prev != nil && len(prev.Values) > 0 && prev.Values[0] != 0 && l1 > 0 {
		tol = math.Min(0.5, cfg.LightTol*l1/math.Abs(prev.Values[0]))
	}
	low, w, err := estimators.TopEigen(ctx, negated{op}, eo(cfg.Seed+6, tol), warm.Min)
	cost.Eigen += low.HVPs
	if err != nil {
		return nil, cost, fmt.Errorf("light λmin: %w", err)
	}
	next.Min = w
	dst.LambdaMin = &snapshot.Eigenpair{Value: -low.Values[0], Residual: low.Residuals[0]}
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

// negated is −H.
type negated struct{ op hvp.Operator }

func (n negated) Dim() int { return n.op.Dim() }

func (n negated) Apply(dst, v []float64) error {
	if err := n.op.Apply(dst, v); err != nil {
		return err
	}
	for i := range dst {
		dst[i] = -dst[i]
	}
	return nil
}

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
