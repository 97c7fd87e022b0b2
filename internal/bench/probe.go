package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"gonum.org/v1/gonum/stat"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/internal/probeknobs"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/export"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// ProbeSide is one estimator configuration's figures along the trajectory.
type ProbeSide struct {
	HVPsPerProbe   float64 `json:"hvps_per_probe"`
	EigenHVPs      float64 `json:"eigen_hvps"`
	TraceHVPs      float64 `json:"trace_hvps"`
	ESDHVPs        float64 `json:"esd_hvps"`
	MaxRelResidual float64 `json:"max_rel_residual"` // max over probes and pairs of ‖Hv−λv‖/|λ1|
	WithinTol      bool    `json:"residuals_within_tol"`
	TraceStdErr    float64 `json:"trace_stderr"`     // mean over probes
	TraceRelStdErr float64 `json:"trace_rel_stderr"` // mean over probes of stderr/|trace|
	ESDMean        float64 `json:"esd_mean"`         // mean over probes of tr(H)/n from the quadrature
	ESDMoment2     float64 `json:"esd_moment2"`      // mean over probes of tr(H²)/n
	LambdaMinRes   float64 `json:"lambda_min_rel_residual,omitempty"`
	Failures       int     `json:"failures"`
	Seconds        float64 `json:"seconds"`
	// HVPSeconds is the wall time of the probes' HVPs (a timing wrapper
	// around the operator), HVPShare HVPSeconds ÷ Seconds: what the
	// linear algebra around the products costs is 1 − HVPShare.
	HVPSeconds float64 `json:"hvp_seconds"`
	HVPShare   float64 `json:"hvp_share"`
	// ProbesPer1000 are the probes an asynchronous `hessmon train` with
	// these estimators finished per 1,000 steps (the last one waited for,
	// as train does), Skipped the due probes it skipped while one ran.
	ProbesPer1000  float64 `json:"probes_per_1000_steps"`
	SkippedPer1000 float64 `json:"skipped_per_1000_steps"`
}

// ProbeResult is the JSON of `hessmon bench probe`.
type ProbeResult struct {
	Model       string    `json:"model"`
	Params      int       `json:"params"`
	Steps       int64     `json:"steps"`
	Every       int64     `json:"every"`
	Probes      int       `json:"probes"`
	Tol         float64   `json:"tol"`
	Baseline    ProbeSide `json:"baseline"`
	New         ProbeSide `json:"new"`
	HVPRatio    float64   `json:"hvps_ratio"` // new ÷ baseline HVPs per probe
	StdErrRatio float64   `json:"trace_stderr_ratio"`
	// Largest |λᵢ(new) − λᵢ(baseline)| / |λ1| over probes and i ≤ k, and
	// the same for λmin (relative to |λ1|).
	MaxLambdaDiff    float64 `json:"max_rel_lambda_diff"`
	MaxLambdaMinDiff float64 `json:"max_rel_lambda_min_diff"`
	// The headline figures under the names.
	HVPsPerProbePerSide  float64 `json:"hvps_per_probe"`
	BaselineHVPsPerProbe float64 `json:"baseline_hvps_per_probe"`
	TraceStdErrNew       float64 `json:"trace_stderr"`
	TraceStdErrBaseline  float64 `json:"baseline_trace_stderr"`
	HVPShare             float64 `json:"hvp_share"` // the current defaults' HVP seconds ÷ probe seconds
}

// round1Config is the monitor's estimator configuration of round 1: the ESD
// apart from the eigen solve, a warm Krylov–Schur, a fixed trace budget.
func round1Config(c monitor.Config) monitor.Config {
	return c.WithKnobs(probeknobs.Knobs{SeparateESD: true, WarmKrylovSchur: true})
}

// ProbeOptions configure Probe. All fields but the profiles are required.
type ProbeOptions struct {
	// Setup builds a fresh model and training set: once for the
	// synchronous trajectory and once per asynchronous run.
	Setup      func() (*trainer.Network, *data.Dataset, error)
	Steps      int64   // training steps of the synchronous trajectory
	Every      int64   // probe interval in steps
	ProbeBatch int     // size of the fixed probe batch
	Tol        float64 // eigen residual tolerance relative to ‖H‖
	AsyncSteps int64   // steps of each asynchronous run (0: skip them)
	Seed       uint64
	// CPUProfile and MemProfile are files for a CPU profile of the
	// synchronous probes and a heap profile at their end (none when empty).
	CPUProfile, MemProfile string
}

// Probe runs the default trajectory with round 1's estimators and the
// current defaults side by side on the same weights and batch at every
// probe, then, unless o.AsyncSteps is 0, an asynchronous training run with
// each that counts the probes it completes.
func Probe(ctx context.Context, o ProbeOptions) (ProbeResult, error) {
	// hessmon train's defaults: top-5, trace ≤ 40 HVPs, ESD 1 × 30, a cold
	// solve every 10th probe; monitor.New fills them in.
	cfg := monitor.Config{Every: o.Every, EigenTol: o.Tol, Seed: o.Seed}
	newCfg, oldCfg := cfg, round1Config(cfg)
	net, train, err := o.Setup()
	if err != nil {
		return ProbeResult{}, err
	}
	probe := trainer.ProbeBatch(train, o.ProbeBatch, o.Seed)
	res := ProbeResult{Model: net.String(), Params: net.Dim(), Steps: o.Steps, Every: o.Every, Tol: o.Tol}
	sides := []*probeRun{{name: "round1"}, {name: "new"}}
	for i, c := range []monitor.Config{oldCfg, newCfg} {
		if err := sides[i].start(c); err != nil {
			return ProbeResult{}, err
		}
	}
	stop, err := startProfile(o.CPUProfile)
	if err != nil {
		return ProbeResult{}, err
	}
	err = runProbeSides(ctx, sides, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
		Data: train, BatchSize: 64, Steps: o.Steps, Seed: o.Seed}, probe, &res)
	stop()
	if err != nil {
		return ProbeResult{}, err
	}
	if err := writeHeapProfile(o.MemProfile); err != nil {
		return ProbeResult{}, err
	}
	res.Baseline, res.New = sides[0].summary(), sides[1].summary()
	if o.AsyncSteps > 0 {
		for i, c := range []monitor.Config{oldCfg, newCfg} {
			side := &res.New
			if i == 0 {
				side = &res.Baseline
			}
			if err := asyncSide(ctx, side, o, c); err != nil {
				return ProbeResult{}, err
			}
		}
	}
	res.finish()
	return res, nil
}

// runProbeSides trains with a hook that steps every side's monitor, then
// closes them.
func runProbeSides(ctx context.Context, sides []*probeRun, cfg trainer.Config, probe trainer.Batch, res *ProbeResult) error {
	cfg.Hooks = []trainer.Hook{func(ctx context.Context, info trainer.StepInfo) error {
		return probeStep(ctx, sides, info, probe, res)
	}}
	_, err := trainer.Train(ctx, cfg)
	for _, sd := range sides {
		if cerr := sd.mon.Close(ctx); err == nil {
			err = cerr
		}
	}
	return err
}

// asyncSide fills side's probes and skips per 1,000 steps of an
// asynchronous training run with cfg.
func asyncSide(ctx context.Context, side *ProbeSide, o ProbeOptions, cfg monitor.Config) error {
	steps := o.AsyncSteps
	st, err := asyncProbes(ctx, o, cfg, trainer.ModeEval, steps)
	if err != nil {
		return err
	}
	side.ProbesPer1000 = float64(st.Probes) * 1000 / float64(steps)
	side.SkippedPer1000 = float64(st.Skipped) * 1000 / float64(steps)
	return nil
}

// probeRun is one estimator configuration: its monitor and what its
// snapshots showed.
type probeRun struct {
	name            string
	mon             *monitor.Monitor
	cfg             monitor.Config
	last            snapshot.Snapshot
	got             bool
	eig, tr, esd    []float64
	se, rse, m1, m2 []float64
	maxRes, minRes  float64
	failures        int
	seconds, hvpSec float64
}

func (sd *probeRun) start(cfg monitor.Config) error {
	mon, err := monitor.New("bench-probe-"+sd.name, cfg, monitor.WithLogger(slog.New(slog.DiscardHandler)),
		monitor.WithSink(monitor.SinkFunc(func(s snapshot.Snapshot) error { sd.record(s); return nil })))
	if err != nil {
		return err
	}
	sd.mon, sd.cfg = mon, mon.Config()
	return nil
}

// record keeps one snapshot's figures. The trace's HVPs are its probes
// and the ESD's its Lanczos steps (both sides pass the deflation its
// products); the eigen solve's are the rest.
func (sd *probeRun) record(s snapshot.Snapshot) {
	sd.last, sd.got = s, true
	if s.Failure != "" {
		sd.failures++
	}
	tr, esd := 0, 0
	if s.Trace != nil {
		tr = s.Trace.Probes
		sd.se = append(sd.se, s.Trace.StdErr)
		sd.rse = append(sd.rse, s.Trace.StdErr/math.Abs(s.Trace.Value))
	}
	if s.ESD != nil {
		esd = s.ESD.Probes * s.ESD.Steps
	}
	sd.eig = append(sd.eig, float64(s.HVPs-tr-esd))
	sd.tr = append(sd.tr, float64(tr))
	sd.esd = append(sd.esd, float64(esd))
	if len(s.Eigenvalues) > 0 {
		scale := math.Abs(s.Eigenvalues[0])
		for _, r := range s.Residuals {
			sd.maxRes = math.Max(sd.maxRes, r/scale)
		}
		if s.LambdaMin != nil {
			sd.minRes = math.Max(sd.minRes, s.LambdaMin.Residual/scale)
		}
	}
	if es := export.SummarizeESD(s.ESD); es != nil {
		sd.m1 = append(sd.m1, float64(es.Mean))
		sd.m2 = append(sd.m2, float64(es.Moment2))
	}
}

// probeStep steps every side's monitor on the same frozen operator, each
// wrapped in a timer, and compares the sides' eigenvalues when they probed.
func probeStep(ctx context.Context, sides []*probeRun, info trainer.StepInfo, probe trainer.Batch, res *ProbeResult) error {
	var op hvp.Operator
	si := hessian.StepInfo(info)
	probed := 0
	for _, sd := range sides {
		sd.got = false
		var timed *Timed
		start := time.Now()
		err := sd.mon.Step(ctx, si, func() (hvp.Operator, error) {
			if op == nil {
				x, err := hessian.NewExact(info.Model, probe, trainer.CrossEntropy{}, trainer.ModeEval)
				if err != nil {
					return nil, err
				}
				op = x
			}
			timed = &Timed{Op: op}
			return timed, nil
		})
		if err != nil {
			return fmt.Errorf("step %d: %w", info.Step, err)
		}
		if timed != nil {
			sd.seconds += time.Since(start).Seconds()
			sd.hvpSec += timed.Elapsed.Seconds()
		}
		if sd.got {
			probed++
		}
	}
	if probed < len(sides) {
		return nil
	}
	a, b := sides[0].last, sides[1].last
	for i := range min(len(a.Eigenvalues), len(b.Eigenvalues)) {
		res.MaxLambdaDiff = math.Max(res.MaxLambdaDiff, math.Abs(a.Eigenvalues[i]-b.Eigenvalues[i])/math.Abs(a.Eigenvalues[0]))
	}
	if a.LambdaMin != nil && b.LambdaMin != nil && len(a.Eigenvalues) > 0 {
		res.MaxLambdaMinDiff = math.Max(res.MaxLambdaMinDiff, math.Abs(a.LambdaMin.Value-b.LambdaMin.Value)/math.Abs(a.Eigenvalues[0]))
	}
	res.Probes++
	return nil
}

func (sd *probeRun) summary() ProbeSide {
	p := ProbeSide{EigenHVPs: stat.Mean(sd.eig, nil), TraceHVPs: stat.Mean(sd.tr, nil), ESDHVPs: stat.Mean(sd.esd, nil),
		MaxRelResidual: sd.maxRes, WithinTol: sd.maxRes <= sd.cfg.EigenTol*(1+1e-9) || sd.cfg.NoEigen,
		TraceStdErr: stat.Mean(sd.se, nil), TraceRelStdErr: stat.Mean(sd.rse, nil),
		ESDMean: stat.Mean(sd.m1, nil), ESDMoment2: stat.Mean(sd.m2, nil), LambdaMinRes: sd.minRes,
		Failures: sd.failures, Seconds: sd.seconds, HVPSeconds: sd.hvpSec}
	p.HVPsPerProbe = p.EigenHVPs + p.TraceHVPs + p.ESDHVPs
	if sd.seconds > 0 {
		p.HVPShare = sd.hvpSec / sd.seconds
	}
	return p
}

func (res *ProbeResult) finish() {
	res.HVPRatio = res.New.HVPsPerProbe / res.Baseline.HVPsPerProbe
	res.StdErrRatio = res.New.TraceStdErr / res.Baseline.TraceStdErr
	res.HVPsPerProbePerSide, res.BaselineHVPsPerProbe = res.New.HVPsPerProbe, res.Baseline.HVPsPerProbe
	res.TraceStdErrNew, res.TraceStdErrBaseline = res.New.TraceStdErr, res.Baseline.TraceStdErr
	res.HVPShare = res.New.HVPShare
}

// WriteText prints res as `hessmon bench probe` does without --json.
func (res ProbeResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("%s, %d params: %d probes every %d steps, tolerance %.0e\n", res.Model, res.Params, res.Probes, res.Every, res.Tol)
	ew.printf("%-9s %8s %7s %7s %7s %10s %12s %10s %12s %9s %9s\n", "", "HVPs", "eigen", "trace", "ESD", "max res", "trace se", "tr(H)/n", "probes/1000", "seconds", "HVP share")
	// probes/1000: an asynchronous hessmon train run (probe every 50 steps).
	for _, row := range []struct {
		name string
		p    ProbeSide
	}{{"round 1", res.Baseline}, {"now", res.New}} {
		ew.printf("%-9s %8.1f %7.1f %7.1f %7.1f %10.2g %12.4g %10.4g %12.1f %9.1f %9.2f\n", row.name, row.p.HVPsPerProbe, row.p.EigenHVPs,
			row.p.TraceHVPs, row.p.ESDHVPs, row.p.MaxRelResidual, row.p.TraceStdErr, row.p.ESDMean, row.p.ProbesPer1000, row.p.Seconds, row.p.HVPShare)
	}
	ew.printf("HVPs now/round 1 %.3f; trace stderr now/round 1 %.3f; max |Δλ|/|λ1| %.2g, max |Δλmin|/|λ1| %.2g\n",
		res.HVPRatio, res.StdErrRatio, res.MaxLambdaDiff, res.MaxLambdaMinDiff)
	return ew.err
}

// startProfile starts a CPU profile to path (nothing when empty) and
// returns its stop function.
func startProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes the allocation profile to path (nothing when
// empty).
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// asyncProbes trains steps steps with hessmon train's defaults (a probe
// every 50 steps, async) and the estimators of cfg, and returns the
// monitor's counts after Close, as hessmon train reports them.
func asyncProbes(ctx context.Context, o ProbeOptions, cfg monitor.Config, mode trainer.Mode, steps int64) (monitor.Stats, error) {
	net, train, err := o.Setup()
	if err != nil {
		return monitor.Stats{}, err
	}
	cfg.Async, cfg.Every = true, 50
	mon, err := monitor.New("bench-probe", cfg, monitor.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return monitor.Stats{}, err
	}
	_, err = trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
		Data: train, BatchSize: 64, Steps: steps, Seed: o.Seed,
		Hooks: []trainer.Hook{hessian.Hook(mon, hessian.HookOptions{Batch: trainer.ProbeBatch(train, o.ProbeBatch, o.Seed), Mode: mode, Logger: slog.New(slog.DiscardHandler)})}})
	if cerr := mon.Close(ctx); err == nil {
		err = cerr
	}
	return mon.Stats(), err
}
