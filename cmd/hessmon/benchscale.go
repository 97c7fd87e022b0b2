package main

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/hessmon/hessmon/internal/bench"
)

func benchScale(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench scale", "MLPs 784-H-H-10 (tanh, MNIST) of about 0.1, 0.5, 2 and 12M parameters, each size and precision in "+
		"a child process of its own so that its peak RSS is its own: the median HVP and its ratio to the gradient on the probe "+
		"batch, the mean synchronous full probe (the monitor with its defaults, a store as sink and warm store) and its HVP share, "+
		"the mean warm light probe (λ1 at 1e-3, no trace, no ESD), peak RSS (VmHWM) and store bytes per probe.",
		"hessmon bench scale --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	sizes := fs.String("sizes", "128,128;384,384;1100,1100;3072,3072", "hidden sizes of each model, ';'-separated")
	precisions := fs.String("precisions", "float64,float32", "HVP precisions, ','-separated")
	batch := fs.Int("probe-batch", 128, "probe batch")
	trainSteps := fs.Int64("train-steps", 20, "SGD steps before probing")
	probes := fs.Int("probes", 3, "full probes (and light probes) per row")
	timing := fs.Int("timing", 5, "HVPs and gradients timed for the medians")
	child := fs.String("child-precision", "", "internal: measure the one row of --hidden at this precision and print it")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *batch <= 0 || *probes <= 0 || *timing <= 0 || *trainSteps < 0 {
		return usageErr("--probe-batch, --probes and --timing must be positive, --train-steps ≥ 0")
	}
	opt := bench.ScaleOptions{Batch: *batch, TrainSteps: *trainSteps, Probes: *probes, Timing: *timing, Seed: mf.seed, Precision: *child}
	if *child != "" {
		return scaleChild(ctx, e, mf, opt)
	}
	var res bench.ScaleResult
	for _, h := range strings.Split(*sizes, ";") {
		for _, p := range strings.Split(*precisions, ",") {
			row, err := bench.ScaleChild(ctx, strings.TrimSpace(h), strings.TrimSpace(p), args)
			if err != nil {
				return err
			}
			res.Rows = append(res.Rows, row)
			if !*asJSON {
				if err := row.WriteText(e.stdout); err != nil {
					return err
				}
			}
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return nil
}

// scaleChild measures one row in this process and prints it as JSON.
func scaleChild(ctx context.Context, e *env, mf modelFlags, opt bench.ScaleOptions) error {
	net, train, _, err := mf.setup()
	if err != nil {
		return err
	}
	row, err := bench.ScaleInTemp(ctx, net, train, opt)
	if err != nil {
		return err
	}
	return json.NewEncoder(e.stdout).Encode(row)
}
