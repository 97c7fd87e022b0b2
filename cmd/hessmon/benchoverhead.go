package main

import (
	"context"
	"encoding/json"

	"github.com/hessmon/hessmon/internal/bench"
	"github.com/hessmon/hessmon/internal/probeknobs"
	"github.com/hessmon/hessmon/trainer/hessian"
)

func benchOverhead(ctx context.Context, e *env, args []string) error {
	var mf modelFlags
	var monf monitorFlags
	fs := newFlags(e, "bench overhead", "train the same MLP for the same steps and seed with and without the monitor at its default "+
		"schedule (a light probe at every due step the budget pays for, full probes when they fit or a trigger fires; async), "+
		"alternating the two, and report the medians and monitored ÷ plain. The monitored time includes waiting for the last "+
		"asynchronous probe (tail_seconds); loop_overhead_ratio is the training loop alone.",
		"hessmon bench overhead --json")
	mf.register(fs, "128,128", "tanh")
	monf.register(fs)
	steps := fs.Int64("steps", 5000, "training steps per run (SGD, batch 64, η 0.05, momentum 0.9; 5000 is 5.3 MNIST epochs). "+
		"The wait for the last probe is a fixed cost per run, so shorter runs show a larger ratio: see tail_seconds and loop_overhead_ratio")
	reps := fs.Int("reps", 3, "runs of each kind")
	busy := fs.Int("busy", 0, "busy-spin processes (sh -c 'while :; do :; done') running beside both the plain and the monitored runs")
	nice := fs.Int("probe-nice", 0, "run the asynchronous probes' thread at this nice value (Linux; rounds 1 and 2 used 19), to measure that choice against the default normal priority")
	asJSON := fs.Bool("json", false, "print JSON")
	// The bench's default schedule is every 100 steps.
	if err := fs.Set("every", "100"); err != nil {
		return err
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *steps <= 0 || *reps <= 0 || *busy < 0 {
		return usageErr("--steps and --reps must be positive, --busy non-negative")
	}
	cfg, bnMode, err := monf.config(mf.seed)
	if err != nil {
		return err
	}
	ds, _, err := mf.loadData()
	if err != nil {
		return err
	}
	model := func(monitored bool) (bench.OverheadModel, error) {
		net, err := mf.build(ds.Shape, ds.Classes)
		if err != nil {
			return bench.OverheadModel{}, err
		}
		m := bench.OverheadModel{Net: net, Data: forModel(ds, net)}
		if monitored {
			prec, err := probePrecision(monf.precision, net)
			if err != nil {
				return bench.OverheadModel{}, err
			}
			m.Hook = hessian.HookOptions{Batch: probeSubset(m.Data, monf.probeBatch, mf.seed), Mode: bnMode, Precision: prec, Logger: discardLogger()}
		}
		return m, nil
	}
	res, err := bench.Overhead(ctx, bench.OverheadOptions{Config: cfg.WithKnobs(probeknobs.Knobs{ProbeNice: *nice}), Model: model,
		Steps: *steps, Seed: mf.seed, Reps: *reps, Busy: *busy, ProbeNice: *nice})
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
