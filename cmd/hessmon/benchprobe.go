package main

import (
	"context"
	"encoding/json"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/internal/bench"
	"github.com/hessmon/hessmon/trainer"
)

func benchProbe(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench probe", "the default trajectory (hessmon train's model and optimiser, a probe every --every steps on the "+
		"fixed probe batch) with two estimator configurations on the same weights and batch at every probe: round 1's (the ESD's "+
		"Lanczos apart, warm Krylov–Schur) and the current defaults (the eigen solve starts from the ESD's Krylov basis; subspace "+
		"refinement of the previous eigenvectors; λmin from the same space). Each side is a monitor.Monitor with train's defaults "+
		"(its own schedule, cold restarts and warm state) stepped synchronously. Reports HVPs per probe by component, eigen "+
		"residuals, trace standard errors, ESD moments, the agreement of λ1..k and λmin, and the HVP share of a probe's wall "+
		"time; then probes completed per 1,000 steps of an asynchronous `hessmon train` run with each.",
		"hessmon bench probe --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	steps := fs.Int64("steps", 2000, "training steps")
	every := fs.Int64("every", 20, "probe interval in steps")
	probeBatch := fs.Int("probe-batch", 128, "size of the fixed probe batch (hessmon train's default)")
	tol := fs.Float64("tol", 1e-4, "eigen residual tolerance relative to ‖H‖ (hessmon train's default)")
	asyncSteps := fs.Int64("async-steps", 1000, "steps of each asynchronous training run that counts completed probes (0: skip)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the synchronous probes to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile (allocations) at the end to this file")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *steps <= 0 || *every <= 0 || *asyncSteps < 0 {
		return usageErr("--steps and --every must be positive, --async-steps ≥ 0")
	}
	if *probeBatch <= 0 || *tol <= 0 {
		return usageErr("--probe-batch and --tol must be positive")
	}
	res, err := bench.Probe(ctx, bench.ProbeOptions{
		Setup: func() (*trainer.Network, *data.Dataset, error) {
			net, train, _, err := mf.setup()
			return net, train, err
		},
		Steps: *steps, Every: *every, ProbeBatch: *probeBatch, Tol: *tol, AsyncSteps: *asyncSteps, Seed: mf.seed,
		CPUProfile: *cpuProfile, MemProfile: *memProfile})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.WriteText(e.stdout)
}
