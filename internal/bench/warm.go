package bench

import (
	"context"
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// WarmResult is the JSON of `hessmon bench warm`.
type WarmResult struct {
	Model          string         `json:"model"`
	Params         int            `json:"params"`
	Steps          int64          `json:"steps"`
	Every          int64          `json:"every"`
	Probes         int            `json:"probes"`
	K              int            `json:"k"`
	Tol            float64        `json:"tol"`
	ColdHVPsTopK   float64        `json:"cold_hvps_topk"`
	WarmHVPsTopK   float64        `json:"warm_hvps_topk"`
	WarmOverCold   float64        `json:"warm_over_cold"`
	MaxLambdaDiff  float64        `json:"max_rel_lambda_diff_warm_vs_cold"`
	TraceHVPs      int            `json:"trace_hvps_per_probe"`
	StdErrIndep    float64        `json:"trace_stderr_independent"`
	StdErrTracked  float64        `json:"trace_stderr_tracked"`
	StdErrRatio    float64        `json:"trace_stderr_ratio"`
	TrackedMethods map[string]int `json:"tracked_methods"`
	// The top-1 tracking mode (hessmon train --track): λ1 alone to a
	// relative residual of 1e-3, warm with a cold restart past 10 HVPs.
	Top1Tol      float64 `json:"top1_tol"`
	Top1ColdHVPs float64 `json:"top1_cold_hvps"`
	Top1WarmHVPs float64 `json:"top1_warm_hvps"`
	Top1Restarts int     `json:"top1_cold_restarts"`
	Top1MaxDiff  float64 `json:"top1_max_rel_lambda_diff_warm_vs_cold"`
}

// WarmOptions configure Warm. All fields are required.
type WarmOptions struct {
	Net       *trainer.Network
	Train     *data.Dataset
	Probe     trainer.Batch // the fixed probe batch
	Steps     int64         // SGD steps (momentum 0.9, batch 64)
	Every     int64         // probe interval in steps
	K         int
	Tol       float64
	TraceHVPs int // HVP budget of each trace estimate
	LR        float64
	Deflate   bool // deflate the tracked trace with the warm solve's eigenvectors
	Seed      uint64
}

// warmRun is the state of one Warm: the warm starts carried from probe to
// probe and the per-probe figures averaged over probes 2..n.
type warmRun struct {
	WarmOptions
	res                                          WarmResult
	eigenWarm, top1Warm                          *estimators.EigenWarm
	traceWarm                                    *estimators.TraceWarm
	probes                                       int
	top1WarmMax                                  int // the tracking mode's cold-restart threshold in HVPs
	cold, warm, seIndep, seTracked, cold1, warm1 []float64
}

// Warm trains o.Net and probes its Hessian every o.Every steps, each time
// cold and warm-started from the previous probe to the same tolerance, and
// compares the trace standard error of independent Hutchinson against the
// tracked estimator at an equal HVP budget.
func Warm(ctx context.Context, o WarmOptions) (WarmResult, error) {
	tracking := monitor.Config{}.Tracking() // the top-1 mode's tolerance and cold-restart threshold
	r := &warmRun{WarmOptions: o, top1WarmMax: tracking.EigenWarmMaxHVPs, res: WarmResult{Model: o.Net.String(), Params: o.Net.Dim(), Steps: o.Steps, Every: o.Every, K: o.K, Tol: o.Tol,
		TraceHVPs: o.TraceHVPs, TrackedMethods: map[string]int{}, Top1Tol: tracking.EigenTol}}
	hook := func(ctx context.Context, info trainer.StepInfo) error {
		if info.Step%o.Every != 0 {
			return nil
		}
		return r.probe(ctx, info)
	}
	_, err := trainer.Train(ctx, trainer.Config{Model: o.Net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: o.LR, Momentum: 0.9},
		Data: o.Train, BatchSize: 64, Steps: o.Steps, Seed: o.Seed, Hooks: []trainer.Hook{hook}})
	if err != nil {
		return WarmResult{}, err
	}
	res := r.res
	res.Probes = r.probes
	res.ColdHVPsTopK, res.WarmHVPsTopK = stat.Mean(r.cold, nil), stat.Mean(r.warm, nil)
	res.WarmOverCold = res.WarmHVPsTopK / res.ColdHVPsTopK
	res.StdErrIndep, res.StdErrTracked = stat.Mean(r.seIndep, nil), stat.Mean(r.seTracked, nil)
	res.StdErrRatio = res.StdErrTracked / res.StdErrIndep
	res.Top1ColdHVPs, res.Top1WarmHVPs = stat.Mean(r.cold1, nil), stat.Mean(r.warm1, nil)
	return res, nil
}

// probe runs one probe's cold and warm solves and records them from the
// second probe on.
func (o *warmRun) probe(ctx context.Context, info trainer.StepInfo) error {
	res := &o.res
	op, err := hessian.NewExact(info.Model, o.Probe, trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		return err
	}
	opt := estimators.EigenOptions{K: o.K, Tol: o.Tol, MaxHVPs: 2000, Seed: o.Seed + uint64(info.Step), KeepVectors: true, KeepProducts: true}
	rc, _, err := estimators.TopEigen(ctx, op, opt, nil)
	if err != nil {
		return fmt.Errorf("cold solve at step %d: %w", info.Step, err)
	}
	rw, w, err := estimators.TopEigen(ctx, op, opt, o.eigenWarm)
	if err != nil {
		return fmt.Errorf("warm solve at step %d: %w", info.Step, err)
	}
	for i := range rc.Values {
		d := math.Abs(rc.Values[i]-rw.Values[i]) / max(math.Abs(rc.Values[0]), 1e-300)
		res.MaxLambdaDiff = max(res.MaxLambdaDiff, d)
	}
	o.eigenWarm = w
	o1 := estimators.EigenOptions{K: 1, Tol: res.Top1Tol, MaxHVPs: 2000, Seed: o.Seed + uint64(info.Step), WarmMaxHVPs: o.top1WarmMax}
	c1, _, err := estimators.TopEigen(ctx, op, o1, nil)
	if err != nil {
		return fmt.Errorf("top-1 cold solve at step %d: %w", info.Step, err)
	}
	w1, nw1, err := estimators.TopEigen(ctx, op, o1, o.top1Warm)
	if err != nil {
		return fmt.Errorf("top-1 warm solve at step %d: %w", info.Step, err)
	}
	o.top1Warm = nw1
	ti, tt, err := o.traces(ctx, op, info.Step, rw)
	if err != nil {
		return err
	}
	o.probes++
	if o.probes > 1 {
		o.cold1 = append(o.cold1, float64(c1.HVPs))
		o.warm1 = append(o.warm1, float64(w1.HVPs))
		if !w1.Warm {
			res.Top1Restarts++
		}
		res.Top1MaxDiff = max(res.Top1MaxDiff, math.Abs(c1.Values[0]-w1.Values[0])/max(math.Abs(c1.Values[0]), 1e-300))
		o.cold = append(o.cold, float64(rc.HVPs))
		o.warm = append(o.warm, float64(rw.HVPs))
		o.seIndep = append(o.seIndep, ti.StdErr)
		o.seTracked = append(o.seTracked, tt.StdErr)
		res.TrackedMethods[tt.Method]++
	}
	return nil
}

// traces estimates the trace independently and tracked, at the same budget.
func (o *warmRun) traces(ctx context.Context, op *hessian.Exact, step int64, rw estimators.EigenResult) (ti, tt estimators.TraceResult, err error) {
	topt := estimators.TraceOptions{RelTol: -1, MaxHVPs: o.TraceHVPs, Seed: o.Seed + 7919*uint64(step)}
	ti, _, err = estimators.Trace(ctx, op, estimators.TraceOptions{RelTol: -1, MaxHVPs: o.TraceHVPs, Seed: topt.Seed, NoTracking: true}, nil)
	if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
		return ti, tt, fmt.Errorf("independent trace: %w", err)
	}
	topt.Seed = o.Seed + 1
	if o.Deflate {
		topt.Deflate, topt.DeflateProducts = rw.Vectors, rw.Products
	}
	tt, tw, err := estimators.Trace(ctx, op, topt, o.traceWarm)
	if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
		return ti, tt, fmt.Errorf("tracked trace: %w", err)
	}
	o.traceWarm = tw
	return ti, tt, nil
}
