package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"gonum.org/v1/gonum/stat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

type warmBench struct {
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

func benchWarm(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench warm", "train an MLP on MNIST and probe the Hessian every --every steps along the trajectory, "+
		"each time cold and warm-started from the previous probe, to the same residual tolerance. Reports mean HVPs per top-k solve "+
		"(probes after the first) and, at an equal HVP budget, the trace standard error of independent Hutchinson against the "+
		"tracked estimator (DeltaShift / deflated, whichever has less variance).",
		"hessmon bench warm --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	steps := fs.Int64("steps", 200, "training steps")
	every := fs.Int64("every", 2, "probe interval in steps (the default probes a slowly changing Hessian, where warm starts pay; see docs/benchmarks.md for longer intervals)")
	k := fs.Int("k", 5, "top-k eigenvalues")
	tol := fs.Float64("tol", 1e-4, "eigen residual tolerance relative to ‖H‖ (the same for warm and cold)")
	traceHVPs := fs.Int("trace-hvps", 40, "HVP budget of each trace estimate (equal for both estimators)")
	probeBatch := fs.Int("probe-batch", 256, "fixed probe batch size")
	lr := fs.Float64("lr", 0.01, "SGD learning rate (momentum 0.9, batch 64)")
	deflate := fs.Bool("deflate", true, "let the tracked estimator deflate with the warm solve's top-k eigenvectors and their H·v products, which the monitor has at no extra HVPs")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *steps <= 0 || *every <= 0 || *k <= 0 || *traceHVPs < 4 || *probeBatch <= 0 || *lr <= 0 {
		return usageErr("--steps, --every, --k, --probe-batch, --lr must be positive and --trace-hvps ≥ 4")
	}
	if *steps < 2**every {
		return usageErr("--steps must allow at least two probes (≥ 2·--every)")
	}
	net, train, _, err := mf.setup()
	if err != nil {
		return err
	}
	probe := probeSubset(train, *probeBatch, mf.seed)
	res := warmBench{Model: net.String(), Params: net.Dim(), Steps: *steps, Every: *every, K: *k, Tol: *tol, TraceHVPs: *traceHVPs,
		TrackedMethods: map[string]int{}}
	var cold, warm, seIndep, seTracked, cold1, warm1 []float64
	var eigenWarm, top1Warm *estimators.EigenWarm
	res.Top1Tol = 1e-3
	var traceWarm *estimators.TraceWarm
	probes := 0
	hook := func(ctx context.Context, info trainer.StepInfo) error {
		if info.Step%*every != 0 {
			return nil
		}
		op, err := hessian.NewExact(info.Model, probe, trainer.CrossEntropy{}, trainer.ModeEval)
		if err != nil {
			return err
		}
		opt := estimators.EigenOptions{K: *k, Tol: *tol, MaxHVPs: 2000, Seed: mf.seed + uint64(info.Step), KeepVectors: true, KeepProducts: true}
		rc, _, err := estimators.TopEigen(ctx, op, opt, nil)
		if err != nil {
			return fmt.Errorf("cold solve at step %d: %w", info.Step, err)
		}
		rw, w, err := estimators.TopEigen(ctx, op, opt, eigenWarm)
		if err != nil {
			return fmt.Errorf("warm solve at step %d: %w", info.Step, err)
		}
		for i := range rc.Values {
			d := abs(rc.Values[i]-rw.Values[i]) / max(abs(rc.Values[0]), 1e-300)
			res.MaxLambdaDiff = max(res.MaxLambdaDiff, d)
		}
		eigenWarm = w
		o1 := estimators.EigenOptions{K: 1, Tol: res.Top1Tol, MaxHVPs: 2000, Seed: mf.seed + uint64(info.Step), WarmMaxHVPs: 10}
		c1, _, err := estimators.TopEigen(ctx, op, o1, nil)
		if err != nil {
			return fmt.Errorf("top-1 cold solve at step %d: %w", info.Step, err)
		}
		w1, nw1, err := estimators.TopEigen(ctx, op, o1, top1Warm)
		if err != nil {
			return fmt.Errorf("top-1 warm solve at step %d: %w", info.Step, err)
		}
		top1Warm = nw1
		topt := estimators.TraceOptions{RelTol: -1, MaxHVPs: *traceHVPs, Seed: mf.seed + 7919*uint64(info.Step)}
		ti, _, err := estimators.Trace(ctx, op, estimators.TraceOptions{RelTol: -1, MaxHVPs: *traceHVPs, Seed: topt.Seed, NoTracking: true}, nil)
		if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
			return fmt.Errorf("independent trace: %w", err)
		}
		topt.Seed = mf.seed + 1
		if *deflate {
			topt.Deflate, topt.DeflateProducts = rw.Vectors, rw.Products
		}
		tt, tw, err := estimators.Trace(ctx, op, topt, traceWarm)
		if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
			return fmt.Errorf("tracked trace: %w", err)
		}
		traceWarm = tw
		probes++
		if probes > 1 {
			cold1 = append(cold1, float64(c1.HVPs))
			warm1 = append(warm1, float64(w1.HVPs))
			if !w1.Warm {
				res.Top1Restarts++
			}
			res.Top1MaxDiff = max(res.Top1MaxDiff, abs(c1.Values[0]-w1.Values[0])/max(abs(c1.Values[0]), 1e-300))
			cold = append(cold, float64(rc.HVPs))
			warm = append(warm, float64(rw.HVPs))
			seIndep = append(seIndep, ti.StdErr)
			seTracked = append(seTracked, tt.StdErr)
			res.TrackedMethods[tt.Method]++
		}
		return nil
	}
	_, err = trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: *lr, Momentum: 0.9},
		Data: train, BatchSize: 64, Steps: *steps, Seed: mf.seed, Hooks: []trainer.Hook{hook}})
	if err != nil {
		return err
	}
	res.Probes = probes
	res.ColdHVPsTopK, res.WarmHVPsTopK = stat.Mean(cold, nil), stat.Mean(warm, nil)
	res.WarmOverCold = res.WarmHVPsTopK / res.ColdHVPsTopK
	res.StdErrIndep, res.StdErrTracked = stat.Mean(seIndep, nil), stat.Mean(seTracked, nil)
	res.StdErrRatio = res.StdErrTracked / res.StdErrIndep
	res.Top1ColdHVPs, res.Top1WarmHVPs = stat.Mean(cold1, nil), stat.Mean(warm1, nil)
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "%s, %d params: %d probes every %d steps (means over probes 2..%d)\n", res.Model, res.Params, res.Probes, res.Every, res.Probes)
	fmt.Fprintf(e.stdout, "  top-%d to tol %.0e: cold %.1f HVPs, warm %.1f HVPs, warm/cold %.3f (max |Δλ|/|λ1| warm vs cold %.1e)\n",
		res.K, res.Tol, res.ColdHVPsTopK, res.WarmHVPsTopK, res.WarmOverCold, res.MaxLambdaDiff)
	fmt.Fprintf(e.stdout, "  top-1 tracking to tol %.0e: cold %.1f HVPs, warm %.2f HVPs (%d cold restarts, max |Δλ1|/λ1 %.1e)\n",
		res.Top1Tol, res.Top1ColdHVPs, res.Top1WarmHVPs, res.Top1Restarts, res.Top1MaxDiff)
	fmt.Fprintf(e.stdout, "  trace at %d HVPs: independent stderr %.4g, tracked %.4g, ratio %.3f (methods %v)\n",
		res.TraceHVPs, res.StdErrIndep, res.StdErrTracked, res.StdErrRatio, res.TrackedMethods)
	return nil
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
