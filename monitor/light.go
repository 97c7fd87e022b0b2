package monitor

import (
	"context"
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// LightWarm is the warm state of light probes: the tracked λ1 and λmin
// vectors (one joint solve, estimators.Extremes) and λ1(P⁻¹H)'s pair, each
// with the vector of the probe before, from which the next solve
// extrapolates. It is kept apart from the full probe's state, so that
// light probes change no full probe.
type LightWarm struct {
	Ext     *estimators.ExtremesWarm
	Precond *estimators.EigenWarm
}

// Light probe defaults: the tracking mode's relative residual, and the
// warm products after which a random vector joins the joint solve in case
// a tracked pair was lost (λ1(P⁻¹H): after which its solve restarts cold).
const (
	defaultLightTol   = 1e-3
	lightWarmMaxHVPs  = 10
	lightMaxHVPsShare = 4 // a light probe may use MaxHVPs/4
)

// AnalyzeLight is the light probe: λ1 and λmin of op, each to a residual
// of Config.LightTol·max(|λ1|, |λmin|) (default 1e-3), in one solve that
// shares its products between both ends, and λ1(P⁻¹H) to LightTol
// relative to itself when in.Preconditioner is set, each warm-started from
// warm and extrapolated. A λmin not converged within the probe's product
// cap is reported with its computed residual. It writes Eigenvalues (λ1
// alone), Residuals, LambdaMin, PreconditionedLambda1, Warm and PeakBytes
// of dst (8·n bytes × lightVectors: the warm vectors plus
// ExtremesOptions.Vectors(); the operator's own memory, such as a float32
// operator's frozen model copy, is not counted), and returns the next warm
// state. A light probe is the smallest there is: over Config.MaxProbeBytes
// it still runs, with a note in Detail.
func AnalyzeLight(ctx context.Context, dst *snapshot.Snapshot, op hvp.Operator, cfg Config, in Inputs, warm *LightWarm) (*LightWarm, Cost, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, Cost{}, err
	}
	if warm == nil || in.Cold {
		warm = new(LightWarm)
	}
	next := new(LightWarm)
	var cost Cost
	limit := max(lightWarmMaxHVPs+20, cfg.MaxHVPs/lightMaxHVPsShare)
	xo := estimators.ExtremesOptions{Tol: cfg.LightTol, MaxHVPs: limit, Seed: cfg.Seed + 5, WarmMaxHVPs: lightWarmMaxHVPs}
	vectors := lightVectors(xo, in, warm)
	dst.PeakBytes = int64(vectors) * 8 * int64(op.Dim())
	if l := probeByteLimit(cfg); dst.PeakBytes > l {
		dst.Detail = joinNote(dst.Detail, fmt.Sprintf("memory: a light probe needs %s, over MaxProbeBytes %s", fmtGB(dst.PeakBytes), fmtGB(l)))
	}
	ext, w, err := estimators.Extremes(ctx, op, xo, warm.Ext)
	cost.Eigen += ext.HVPs
	if err != nil && !(errors.Is(err, estimators.ErrNotConverged) && ext.MaxConverged && w != nil) {
		return nil, cost, fmt.Errorf("light λ1, λmin: %w", err)
	}
	next.Ext = w
	dst.Eigenvalues, dst.Residuals = []float64{ext.MaxValue}, []float64{ext.MaxResidual}
	dst.LambdaMin = &snapshot.Eigenpair{Value: ext.MinValue, Residual: ext.MinResidual}
	dst.Warm = ext.Warm

	if in.Preconditioner != nil {
		pop, err := hvp.NewInversePreconditioned(op, in.Preconditioner)
		if err != nil {
			return nil, cost, fmt.Errorf("light preconditioned sharpness: %w", err)
		}
		eo := estimators.EigenOptions{K: 1, Tol: cfg.LightTol, MaxHVPs: max(1, limit-cost.Total()), Seed: cfg.Seed + 7, WarmMaxHVPs: lightWarmMaxHVPs}
		res, w, err := estimators.TopEigen(ctx, pop, eo, warm.Precond)
		cost.Preconditioned = res.HVPs
		if err != nil {
			return nil, cost, fmt.Errorf("light preconditioned sharpness: %w", err)
		}
		next.Precond = w
		dst.PreconditionedLambda1 = &snapshot.Eigenpair{Value: res.Values[0], Residual: res.Residuals[0]}
	}
	return next, cost, nil
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
	if x := out.Ext; x != nil && len(x.Max) > 0 && x.MaxValue >= e.Values[0]*(1-1e-3) {
		return out // the light track is ahead of the full probe's
	}
	ext := &estimators.ExtremesWarm{Max: e.Vectors[0], MaxValue: e.Values[0]}
	if x := out.Ext; x != nil {
		ext.Min, ext.MinValue, ext.PrevMin = x.Min, x.MinValue, x.PrevMin
	}
	out.Ext = ext
	return out
}

// lightVectors is a light probe's peak n-vectors: its warm vectors, the
// joint solve's (ExtremesOptions.Vectors), and λ1(P⁻¹H)'s solve after it
// with the two extreme vectors kept.
func lightVectors(xo estimators.ExtremesOptions, in Inputs, warm *LightWarm) int {
	v := 0
	if warm != nil && warm.Ext != nil {
		e := warm.Ext
		for _, x := range [][]float64{e.Max, e.Min, e.PrevMax, e.PrevMin} {
			if len(x) > 0 {
				v++
			}
		}
	}
	if warm != nil && warm.Precond != nil {
		v += len(warm.Precond.Vectors)
	}
	stage := xo.Vectors()
	if in.Preconditioner != nil {
		stage = max(stage, 2+estimators.EigenOptions{K: 1}.Vectors()+1)
	}
	return v + stage
}
