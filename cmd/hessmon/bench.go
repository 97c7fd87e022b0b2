package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

func runBench(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(e.stderr, `hessmon bench: measure what curvature costs, as ratios measured in one run.

  hessmon bench hvp       HVP time ÷ gradient time on one model and batch
  hessmon bench warm      HVPs per probe with and without warm starts along a training run
  hessmon bench overhead  training time with the monitor ÷ without

Run 'hessmon bench <kind> --help' for flags.`)
		if len(args) == 0 {
			return usageErr("bench needs a kind: hvp, warm or overhead")
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
	}
	return usageErr("unknown bench %q: want hvp, warm or overhead", args[0])
}

type hvpBench struct {
	Model        string  `json:"model"`
	Params       int     `json:"params"`
	Batch        int     `json:"batch"`
	BLAS         string  `json:"blas"`
	Reps         int     `json:"reps"`
	GradSeconds  float64 `json:"grad_seconds"`
	HVPSeconds   float64 `json:"hvp_seconds"`
	HVPOverGrad  float64 `json:"hvp_over_grad"`
	HVPFull      float64 `json:"hvp_with_forward_seconds"`
	FullOverGrad float64 `json:"hvp_with_forward_over_grad"`
	HVPGFlops    float64 `json:"hvp_gflops"`
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func benchHVP(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench hvp", "time the exact gradient and the exact Hessian-vector product on one batch "+
		"(medians over --reps after a warm-up). hvp_seconds is one Apply of the HVP operator, whose forward pass is cached "+
		"as in every estimator; hvp_with_forward_seconds includes a fresh forward pass.",
		"hessmon bench hvp --model mlp --hidden 128,128 --act tanh --batch 1000 --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	batch := fs.Int("batch", 1000, "batch size (the first B training images)")
	reps := fs.Int("reps", 15, "timed repetitions")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *batch <= 0 || *reps <= 0 {
		return usageErr("--batch and --reps must be positive")
	}
	net, train, _, err := mf.setup()
	if err != nil {
		return err
	}
	b := train.Head(*batch)
	loss := trainer.CrossEntropy{}
	op, err := hessian.NewExact(net, b, loss, trainer.ModeEval)
	if err != nil {
		return err
	}
	tape := net.NewTape()
	n := net.Dim()
	g, v, hv := make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range v {
		v[i] = float64((i*7919)%13) - 6
	}
	fullTape := net.NewTape()
	var tg, th, tf []float64
	for r := -2; r < *reps; r++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := tape.Grad(g, b, loss, trainer.ModeEval); err != nil {
			return err
		}
		t1 := time.Now()
		if err := op.Apply(hv, v); err != nil {
			return err
		}
		t2 := time.Now()
		if _, err := fullTape.Forward(b, loss, trainer.ModeEval); err != nil {
			return err
		}
		if err := fullTape.HVP(hv, v); err != nil {
			return err
		}
		t3 := time.Now()
		if r >= 0 {
			tg = append(tg, t1.Sub(t0).Seconds())
			th = append(th, t2.Sub(t1).Seconds())
			tf = append(tf, t3.Sub(t2).Seconds())
		}
	}
	_, flops := net.GEMMFlops(b.Len())
	res := hvpBench{Model: net.String(), Params: n, Batch: b.Len(), BLAS: trainer.BLAS().String(), Reps: *reps,
		GradSeconds: median(tg), HVPSeconds: median(th), HVPFull: median(tf)}
	res.HVPOverGrad = res.HVPSeconds / res.GradSeconds
	res.FullOverGrad = res.HVPFull / res.GradSeconds
	res.HVPGFlops = flops / res.HVPSeconds / 1e9
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "%s, %d params, batch %d, BLAS %s (medians of %d)\n", res.Model, res.Params, res.Batch, res.BLAS, res.Reps)
	fmt.Fprintf(e.stdout, "  gradient            %8.2f ms\n", res.GradSeconds*1e3)
	fmt.Fprintf(e.stdout, "  HVP (cached fwd)    %8.2f ms   %.2f× gradient   %.1f GFLOP/s\n", res.HVPSeconds*1e3, res.HVPOverGrad, res.HVPGFlops)
	fmt.Fprintf(e.stdout, "  HVP (with forward)  %8.2f ms   %.2f× gradient\n", res.HVPFull*1e3, res.FullOverGrad)
	return nil
}
