package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

type overheadBench struct {
	Model            string    `json:"model"`
	Steps            int64     `json:"steps"`
	Every            int64     `json:"every"`
	Async            bool      `json:"async"`
	Reps             int       `json:"reps"`
	PlainSeconds     float64   `json:"plain_seconds"`
	MonitoredSeconds float64   `json:"monitored_seconds"`
	OverheadRatio    float64   `json:"overhead_ratio"`
	Probes           int       `json:"probes_per_run"`
	Skipped          int       `json:"skipped_per_run"`
	HVPsPerProbe     float64   `json:"hvps_per_probe"`
	ProbeSeconds     float64   `json:"probe_seconds_per_probe"`
	TailSeconds      float64   `json:"tail_seconds"`
	LoopRatio        float64   `json:"loop_overhead_ratio"`
	PlainAll         []float64 `json:"plain_all"`
	MonitoredAll     []float64 `json:"monitored_all"`
	TailAll          []float64 `json:"tail_all"`
}

func benchOverhead(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench overhead", "train the same MLP for the same steps and seed with and without the monitor at its default "+
		"schedule (λ1..5, trace, ESD, warm-started), alternating the two, and report the medians and monitored ÷ plain. "+
		"The monitored time includes waiting for the last asynchronous probe (tail_seconds); loop_overhead_ratio is the training loop alone.",
		"hessmon bench overhead --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	var monf monitorFlags
	monf.register(fs)
	steps := fs.Int64("steps", 5000, "training steps per run (SGD, batch 64, η 0.05, momentum 0.9; 5000 is 5.3 MNIST epochs). "+
		"The wait for the last probe is a fixed cost per run, so shorter runs show a larger ratio: see tail_seconds and loop_overhead_ratio")
	reps := fs.Int("reps", 3, "runs of each kind")
	asJSON := fs.Bool("json", false, "print JSON")
	// The bench's default schedule is every 100 steps.
	if err := fs.Set("every", "100"); err != nil {
		return err
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if *steps <= 0 || *reps <= 0 {
		return usageErr("--steps and --reps must be positive")
	}
	cfg, bnMode, err := monf.config(mf.seed)
	if err != nil {
		return err
	}
	train, _, err := mf.loadData()
	if err != nil {
		return err
	}
	res := overheadBench{Steps: *steps, Every: cfg.Every, Async: cfg.Async, Reps: *reps}
	var hvps, probeSecs float64
	var loops, tails []float64
	var probes int
	runOnce := func(monitored bool) (float64, error) {
		net, err := mf.build(train.Shape, train.Classes)
		if err != nil {
			return 0, err
		}
		res.Model = net.String()
		data := forModel(train, net)
		var hooks []trainer.Hook
		var mon *monitor.Monitor
		if monitored {
			mon, err = monitor.New("bench", cfg, monitor.WithLogger(discardLogger()))
			if err != nil {
				return 0, err
			}
			prec, err := probePrecision(monf.precision, net)
			if err != nil {
				return 0, err
			}
			hooks = append(hooks, hessian.Hook(mon, hessian.HookOptions{Batch: probeSubset(data, monf.probeBatch, mf.seed), Mode: bnMode, Precision: prec, Logger: discardLogger()}))
		}
		start := time.Now()
		_, err = trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
			Data: data, BatchSize: 64, Steps: *steps, Seed: mf.seed, Hooks: hooks})
		loop := time.Since(start).Seconds()
		if mon != nil {
			if err := mon.Close(ctx); err != nil {
				return 0, err
			}
		}
		elapsed := time.Since(start).Seconds()
		if monitored {
			loops = append(loops, loop)
			tails = append(tails, elapsed-loop)
		}
		if err != nil {
			return 0, err
		}
		if mon != nil {
			st := mon.Stats()
			probes += st.Probes
			res.Skipped += st.Skipped
			hvps += float64(st.HVPs)
			probeSecs += st.ProbeSeconds
		}
		return elapsed, nil
	}
	for r := 0; r < *reps; r++ {
		p, err := runOnce(false)
		if err != nil {
			return err
		}
		m, err := runOnce(true)
		if err != nil {
			return err
		}
		res.PlainAll = append(res.PlainAll, p)
		res.MonitoredAll = append(res.MonitoredAll, m)
	}
	res.PlainSeconds, res.MonitoredSeconds = median(res.PlainAll), median(res.MonitoredAll)
	res.OverheadRatio = res.MonitoredSeconds / res.PlainSeconds
	res.TailSeconds = median(tails)
	res.TailAll = tails
	res.LoopRatio = median(loops) / res.PlainSeconds
	res.Probes = probes / *reps
	res.Skipped /= *reps
	if probes > 0 {
		res.HVPsPerProbe = hvps / float64(probes)
		res.ProbeSeconds = probeSecs / float64(probes)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "%s, %d steps, probe every %d (async %v), medians of %d\n", res.Model, res.Steps, res.Every, res.Async, res.Reps)
	fmt.Fprintf(e.stdout, "  plain %.2fs, monitored %.2fs, overhead ratio %.3f\n", res.PlainSeconds, res.MonitoredSeconds, res.OverheadRatio)
	fmt.Fprintf(e.stdout, "  of which the training loop %.3f × plain, then %.2fs waiting for the last probe\n", res.LoopRatio, res.TailSeconds)
	fmt.Fprintf(e.stdout, "  %d probes per run (%d skipped), %.1f HVPs and %.2fs per probe\n", res.Probes, res.Skipped, res.HVPsPerProbe, res.ProbeSeconds)
	return nil
}
