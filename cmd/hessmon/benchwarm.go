package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hessmon/hessmon/internal/bench"
)

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
	res, err := bench.Warm(ctx, bench.WarmOptions{Net: net, Train: train, Probe: probeSubset(train, *probeBatch, mf.seed), Steps: *steps,
		Every: *every, K: *k, Tol: *tol, TraceHVPs: *traceHVPs, LR: *lr, Deflate: *deflate, Seed: mf.seed})
	if err != nil {
		return err
	}
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
