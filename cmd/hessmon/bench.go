package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hessmon/hessmon/internal/bench"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

func runBench(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(e.stderr, `hessmon bench: measure what curvature costs, as ratios measured in one run.

  hessmon bench hvp       HVP time ÷ gradient time on one model and batch
  hessmon bench warm      HVPs per probe with and without warm starts along a training run
  hessmon bench overhead  training time with the monitor ÷ without
  hessmon bench probe     HVPs per probe by estimate, round 1's estimators against the current ones
  hessmon bench store     store file size and write/read times of a long run
  hessmon bench scale     HVP, probe time, peak RSS and store bytes per probe for MLPs of 0.1–12M parameters

Run 'hessmon bench <kind> --help' for flags.`)
		if len(args) == 0 {
			return usageErr("bench needs a kind: hvp, warm, overhead, probe, store or scale")
		}
		return nil
	}
	switch args[0] {
	case "hvp":
		return benchHVP(ctx, e, args[1:])
	case "warm":
		return benchWarm(ctx, e, args[1:])
	case "overhead":
		return benchOverhead(ctx, e, args[1:])
	case "probe":
		return benchProbe(ctx, e, args[1:])
	case "store":
		return benchStore(ctx, e, args[1:])
	case "scale":
		return benchScale(ctx, e, args[1:])
	}
	return usageErr("unknown bench %q: want hvp, warm, overhead, probe, store or scale", args[0])
}

func benchHVP(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench hvp", "time the exact gradient and the exact Hessian-vector product on one batch "+
		"(medians over --reps after a warm-up), and the BLAS alone on the HVP's own matrix products in the same loop. "+
		"hvp_seconds is one Apply of the HVP operator, whose forward pass is cached as in every estimator; "+
		"hvp_with_forward_seconds includes a fresh forward pass; blas_gflops is the rate of the HVP's GEMMs run alone; "+
		"probe is the same on the monitor's probe batch. --vs-torch runs bench/torch_hvp.py on the same weights, batch and v "+
		"(Debian: apt-get install python3-torch). HESSMON_BLAS=auto|openblas|gonum chooses the BLAS.",
		"hessmon bench hvp --model mlp --hidden 128,128 --act tanh --batch 1000 --vs-torch --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	batch := fs.Int("batch", 1000, "batch size (the first B training images)")
	probeBatch := fs.Int("probe-batch", 128, "batch of the probe-workload HVP")
	reps := fs.Int("reps", 15, "timed repetitions")
	asJSON := fs.Bool("json", false, "print JSON")
	vsTorch := fs.Bool("vs-torch", false, "also time PyTorch's double-backward HVP with --torch-script (MLPs only)")
	script := fs.String("torch-script", "bench/torch_hvp.py", "the PyTorch reference script")
	python := fs.String("python", "/usr/bin/python3", "Python with torch (Debian's python3-torch installs into /usr/bin/python3)")
	torchThreads := fs.Int("torch-threads", 0, "torch.set_num_threads for --vs-torch (0: torch's default)")
	precision := fs.String("precision", "float64", "float32 also times float32 HVPs against float64 in one loop (and torch in float32 with --vs-torch)")
	if err := parse(fs, args); err != nil {
		return err
	}
	prec, err := hessian.ParsePrecision(*precision)
	if err != nil {
		return usageErr("--precision: %v", err)
	}
	if *batch <= 0 || *reps <= 0 || *probeBatch <= 0 {
		return usageErr("--batch, --probe-batch and --reps must be positive")
	}
	net, train, _, err := mf.setup()
	if err != nil {
		return err
	}
	o := bench.HVPOptions{Net: net, Batch: trainer.HeadBatch(train, *batch), ProbeBatch: trainer.HeadBatch(train, *probeBatch),
		Reps: *reps, Precision: prec}
	if *vsTorch {
		o.Torch = &bench.TorchOptions{Python: *python, Script: *script, Threads: *torchThreads}
	}
	res, err := bench.HVP(ctx, o)
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
