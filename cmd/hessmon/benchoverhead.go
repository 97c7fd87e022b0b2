package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/internal/bench"
	"github.com/hessmon/hessmon/internal/probeknobs"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

type overheadBench struct {
	Model            string  `json:"model"`
	Steps            int64   `json:"steps"`
	Every            int64   `json:"every"`
	Async            bool    `json:"async"`
	Budget           float64 `json:"budget"`
	Busy             int     `json:"busy"`
	ProbeNice        int     `json:"probe_nice,omitempty"`
	Reps             int     `json:"reps"`
	PlainSeconds     float64 `json:"plain_seconds"`
	MonitoredSeconds float64 `json:"monitored_seconds"`
	OverheadRatio    float64 `json:"overhead_ratio"`
	// Per run: due steps, and how many got a λ1 (due_measured_fraction),
	// light and full probes, those a trigger brought forward, skipped.
	Due                 int     `json:"due_per_run"`
	DueMeasuredFraction float64 `json:"due_measured_fraction"`
	Light               int     `json:"light_probes_per_run"`
	Full                int     `json:"full_probes_per_run"`
	Triggered           int     `json:"triggered_per_run"`
	Probes              int     `json:"probes_per_run"`
	Skipped             int     `json:"skipped_per_run"`
	HVPsPerProbe        float64 `json:"hvps_per_probe"`
	HVPsPerLight        float64 `json:"hvps_per_light_probe"`
	HVPsPerFull         float64 `json:"hvps_per_full_probe"`
	ProbeSeconds        float64 `json:"probe_seconds_per_probe"`
	// MeasuredOverhead is what the monitor's own accounting says the
	// probes cost training (Stats.Overhead, median over runs).
	MeasuredOverhead float64   `json:"measured_overhead"`
	TailSeconds      float64   `json:"tail_seconds"`
	LoopRatio        float64   `json:"loop_overhead_ratio"`
	PlainAll         []float64 `json:"plain_all"`
	MonitoredAll     []float64 `json:"monitored_all"`
	TailAll          []float64 `json:"tail_all"`
}

// overheadRun is one bench overhead: its flags and what the runs add up.
type overheadRun struct {
	mf     modelFlags
	monf   monitorFlags
	cfg    monitor.Config
	steps  int64
	data   *data.Dataset
	bnMode trainer.Mode
	res    overheadBench
	loops  []float64
	meas   []float64
	stats  monitor.Stats // summed over the monitored runs
}

func benchOverhead(ctx context.Context, e *env, args []string) error {
	var o overheadRun
	fs := newFlags(e, "bench overhead", "train the same MLP for the same steps and seed with and without the monitor at its default "+
		"schedule (a light probe at every due step the budget pays for, full probes when they fit or a trigger fires; async), "+
		"alternating the two, and report the medians and monitored ÷ plain. The monitored time includes waiting for the last "+
		"asynchronous probe (tail_seconds); loop_overhead_ratio is the training loop alone.",
		"hessmon bench overhead --json")
	o.mf.register(fs, "128,128", "tanh")
	o.monf.register(fs)
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
	var err error
	if o.cfg, o.bnMode, err = o.monf.config(o.mf.seed); err != nil {
		return err
	}
	if o.data, _, err = o.mf.loadData(); err != nil {
		return err
	}
	o.cfg = o.cfg.WithKnobs(probeknobs.Knobs{ProbeNice: *nice})
	o.steps = *steps
	o.res = overheadBench{Steps: *steps, Every: o.cfg.Every, Async: o.cfg.Async, Budget: o.cfg.Budget, Busy: *busy, ProbeNice: *nice, Reps: *reps}
	stop, err := startBusy(*busy)
	if err != nil {
		return err
	}
	defer stop()
	for range *reps {
		p, err := o.once(ctx, false)
		if err != nil {
			return err
		}
		m, err := o.once(ctx, true)
		if err != nil {
			return err
		}
		o.res.PlainAll = append(o.res.PlainAll, p)
		o.res.MonitoredAll = append(o.res.MonitoredAll, m)
	}
	o.summarise()
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(o.res)
	}
	printOverhead(e, &o.res)
	return nil
}

// once trains one run, with the monitor (the real one, through the
// trainer hook) or without, and returns its wall time.
func (o *overheadRun) once(ctx context.Context, monitored bool) (float64, error) {
	net, err := o.mf.build(o.data.Shape, o.data.Classes)
	if err != nil {
		return 0, err
	}
	o.res.Model = net.String()
	data := forModel(o.data, net)
	var hooks []trainer.Hook
	var mon *monitor.Monitor
	if monitored {
		if mon, err = monitor.New("bench", o.cfg, monitor.WithLogger(discardLogger())); err != nil {
			return 0, err
		}
		prec, err := probePrecision(o.monf.precision, net)
		if err != nil {
			return 0, err
		}
		hooks = append(hooks, hessian.Hook(mon, hessian.HookOptions{Batch: probeSubset(data, o.monf.probeBatch, o.mf.seed), Mode: o.bnMode, Precision: prec, Logger: discardLogger()}))
	}
	start := time.Now()
	_, err = trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
		Data: data, BatchSize: 64, Steps: o.steps, Seed: o.mf.seed, Hooks: hooks})
	loop := time.Since(start).Seconds()
	if mon != nil {
		if err := mon.Close(ctx); err != nil {
			return 0, err
		}
	}
	elapsed := time.Since(start).Seconds()
	if err != nil {
		return 0, err
	}
	if mon != nil {
		o.loops = append(o.loops, loop)
		o.res.TailAll = append(o.res.TailAll, elapsed-loop)
		st := mon.Stats()
		o.meas = append(o.meas, st.Overhead)
		s := &o.stats
		s.Due += st.Due
		s.Measured += st.Measured
		s.Light += st.Light
		s.Full += st.Full
		s.Triggered += st.Triggered
		s.Probes += st.Probes
		s.Skipped += st.Skipped
		s.HVPs += st.HVPs
		s.LightHVPs += st.LightHVPs
		s.FullHVPs += st.FullHVPs
		s.ProbeSeconds += st.ProbeSeconds
	}
	return elapsed, nil
}

// summarise turns the runs into the medians and per-run counts.
func (o *overheadRun) summarise() {
	r, s, reps := &o.res, &o.stats, o.res.Reps
	r.PlainSeconds, r.MonitoredSeconds = bench.Median(r.PlainAll), bench.Median(r.MonitoredAll)
	r.OverheadRatio = r.MonitoredSeconds / r.PlainSeconds
	r.TailSeconds = bench.Median(r.TailAll)
	r.LoopRatio = bench.Median(o.loops) / r.PlainSeconds
	r.MeasuredOverhead = bench.Median(o.meas)
	r.Due, r.Light, r.Full, r.Triggered = s.Due/reps, s.Light/reps, s.Full/reps, s.Triggered/reps
	r.Probes, r.Skipped = s.Probes/reps, s.Skipped/reps
	per := func(h, n int) float64 {
		if n == 0 {
			return 0
		}
		return float64(h) / float64(n)
	}
	r.DueMeasuredFraction = per(s.Measured, s.Due)
	r.HVPsPerProbe, r.HVPsPerLight, r.HVPsPerFull = per(s.HVPs, s.Probes), per(s.LightHVPs, s.Light), per(s.FullHVPs, s.Full)
	if s.Probes > 0 {
		r.ProbeSeconds = s.ProbeSeconds / float64(s.Probes)
	}
}

func printOverhead(e *env, r *overheadBench) {
	fmt.Fprintf(e.stdout, "%s, %d steps, probe every %d (async %v, budget %.0f%%, %d busy), medians of %d\n",
		r.Model, r.Steps, r.Every, r.Async, 100*r.Budget, r.Busy, r.Reps)
	fmt.Fprintf(e.stdout, "  plain %.2fs, monitored %.2fs, overhead ratio %.3f (the monitor measured %.3f)\n",
		r.PlainSeconds, r.MonitoredSeconds, r.OverheadRatio, 1+r.MeasuredOverhead)
	fmt.Fprintf(e.stdout, "  of which the training loop %.3f × plain, then %.2fs waiting for the last probe\n", r.LoopRatio, r.TailSeconds)
	fmt.Fprintf(e.stdout, "  per run: %d due steps, %.0f%% with λ1; %d light (%.1f HVPs each), %d full (%.1f HVPs, %d triggered), %d skipped\n",
		r.Due, 100*r.DueMeasuredFraction, r.Light, r.HVPsPerLight, r.Full, r.HVPsPerFull, r.Triggered, r.Skipped)
}

// startBusy starts n busy-spin processes and returns the function that
// ends them (by their process ids).
func startBusy(n int) (stop func(), err error) {
	var procs []*os.Process
	stop = func() {
		for _, p := range procs {
			_ = p.Kill()
			_, _ = p.Wait()
		}
	}
	for range n {
		cmd := exec.Command("sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("starting a busy process: %w", err)
		}
		procs = append(procs, cmd.Process)
	}
	return stop, nil
}
