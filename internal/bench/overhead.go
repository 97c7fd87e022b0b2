package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// OverheadResult is the JSON of `hessmon bench overhead`.
type OverheadResult struct {
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

// OverheadModel is one run's fresh model, its training data and, for a
// monitored run, the probe hook's options.
type OverheadModel struct {
	Net  *trainer.Network
	Data *data.Dataset
	Hook hessian.HookOptions
}

// OverheadOptions configures Overhead. Model builds each run's model
// afresh (the same seed every time); monitored says whether the run
// needs the hook options.
type OverheadOptions struct {
	Config    monitor.Config
	Model     func(monitored bool) (OverheadModel, error)
	Steps     int64
	Seed      uint64
	Reps      int
	Busy      int
	ProbeNice int
}

type overheadRun struct {
	o     OverheadOptions
	res   OverheadResult
	loops []float64
	meas  []float64
	stats monitor.Stats // summed over the monitored runs
}

// Overhead trains the same model o.Reps times with and without the real
// monitor (through hessian.Hook), alternating the two beside o.Busy
// busy-spin processes, and reports the medians and monitored ÷ plain.
func Overhead(ctx context.Context, o OverheadOptions) (OverheadResult, error) {
	r := &overheadRun{o: o, res: OverheadResult{Steps: o.Steps, Every: o.Config.Every, Async: o.Config.Async, Budget: o.Config.Budget,
		Busy: o.Busy, ProbeNice: o.ProbeNice, Reps: o.Reps}}
	stop, err := startBusy(o.Busy)
	if err != nil {
		return OverheadResult{}, err
	}
	defer stop()
	for range o.Reps {
		p, err := r.once(ctx, false)
		if err != nil {
			return OverheadResult{}, err
		}
		m, err := r.once(ctx, true)
		if err != nil {
			return OverheadResult{}, err
		}
		r.res.PlainAll = append(r.res.PlainAll, p)
		r.res.MonitoredAll = append(r.res.MonitoredAll, m)
	}
	r.summarise()
	return r.res, nil
}

// once trains one run, with the monitor (the real one, through the
// trainer hook) or without, and returns its wall time.
func (o *overheadRun) once(ctx context.Context, monitored bool) (float64, error) {
	m, err := o.o.Model(monitored)
	if err != nil {
		return 0, err
	}
	o.res.Model = m.Net.String()
	var hooks []trainer.Hook
	var mon *monitor.Monitor
	if monitored {
		if mon, err = monitor.New("bench", o.o.Config, monitor.WithLogger(slog.New(slog.DiscardHandler))); err != nil {
			return 0, err
		}
		hooks = append(hooks, hessian.Hook(mon, m.Hook))
	}
	start := time.Now()
	_, err = trainer.Train(ctx, trainer.Config{Model: m.Net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
		Data: m.Data, BatchSize: 64, Steps: o.o.Steps, Seed: o.o.Seed, Hooks: hooks})
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
		o.add(mon.Stats())
	}
	return elapsed, nil
}

func (o *overheadRun) add(st monitor.Stats) {
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

// summarise turns the runs into the medians and per-run counts.
func (o *overheadRun) summarise() {
	r, s, reps := &o.res, &o.stats, o.res.Reps
	r.PlainSeconds, r.MonitoredSeconds = median(r.PlainAll), median(r.MonitoredAll)
	r.OverheadRatio = r.MonitoredSeconds / r.PlainSeconds
	r.TailSeconds = median(r.TailAll)
	r.LoopRatio = median(o.loops) / r.PlainSeconds
	r.MeasuredOverhead = median(o.meas)
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

// WriteText prints r as `hessmon bench overhead` does without --json.
func (r *OverheadResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("%s, %d steps, probe every %d (async %v, budget %.0f%%, %d busy), medians of %d\n",
		r.Model, r.Steps, r.Every, r.Async, 100*r.Budget, r.Busy, r.Reps)
	ew.printf("  plain %.2fs, monitored %.2fs, overhead ratio %.3f (the monitor measured %.3f)\n",
		r.PlainSeconds, r.MonitoredSeconds, r.OverheadRatio, 1+r.MeasuredOverhead)
	ew.printf("  of which the training loop %.3f × plain, then %.2fs waiting for the last probe\n", r.LoopRatio, r.TailSeconds)
	ew.printf("  per run: %d due steps, %.0f%% with λ1; %d light (%.1f HVPs each), %d full (%.1f HVPs, %d triggered), %d skipped\n",
		r.Due, 100*r.DueMeasuredFraction, r.Light, r.HVPsPerLight, r.Full, r.HVPsPerFull, r.Triggered, r.Skipped)
	return ew.err
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
