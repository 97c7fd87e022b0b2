package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// monitorFlags are the probe settings shared by train and bench.
type monitorFlags struct {
	every      int64
	top        int
	order      string
	tol        float64
	trace      bool
	esd        bool
	noTrace    bool
	noESD      bool
	track      bool
	esdSteps   int
	maxHVPs    int
	traceHVPs  int
	timeout    time.Duration
	probeBatch int
	async      bool
	overhead   float64
	fullEvery  int
	blockEvery int
	groups     groupFlags
	bnMode     string
	precision  string
}

func (m *monitorFlags) register(fs *flag.FlagSet) {
	fs.Int64Var(&m.every, "every", 50, "probe the Hessian every N steps")
	fs.IntVar(&m.top, "top", 5, "top-k eigenvalues per probe (0 disables)")
	fs.StringVar(&m.order, "order", "algebraic", "eigenvalue order: algebraic (largest λ) or magnitude (largest |λ|)")
	fs.Float64Var(&m.tol, "tol", 1e-4, "eigen residual tolerance relative to ‖H‖")
	fs.BoolVar(&m.trace, "trace", true, "estimate the trace (and per-layer block traces)")
	fs.BoolVar(&m.esd, "esd", true, "estimate the eigenvalue spectral density")
	fs.BoolVar(&m.noTrace, "no-trace", false, "the same as --trace=false")
	fs.BoolVar(&m.noESD, "no-esd", false, "the same as --esd=false")
	fs.BoolVar(&m.track, "track", false, "top-1 tracking for frequent probes: λ1 alone to a relative residual of 1e-3, warm from the "+
		"previous probe in a few HVPs, restarting cold when the warm start needs more than 10 (sets --top 1 --no-trace --no-esd --tol 1e-3)")
	fs.IntVar(&m.esdSteps, "esd-steps", 30, "Lanczos steps of the spectral density")
	fs.IntVar(&m.maxHVPs, "max-hvps", 400, "HVP budget per probe")
	fs.IntVar(&m.traceHVPs, "trace-hvps", 40, "HVP budget of the trace within a probe: it stops at 5% relative standard error or here, and reports its standard error either way")
	fs.DurationVar(&m.timeout, "probe-timeout", 2*time.Minute, "wall-time budget per probe")
	fs.IntVar(&m.probeBatch, "probe-batch", 128, "size of the fixed, seeded probe batch")
	fs.BoolVar(&m.async, "async", true, "probe a frozen copy of the weights in the background while training continues")
	fs.Float64Var(&m.overhead, "budget", 0.05, "with --async: the share of training time probes may cost; every due step gets a light probe "+
		"(λ1, λmin) when it fits, a full one when its measured cost fits, or a trigger brings it forward")
	fs.Float64Var(&m.overhead, "overhead", 0.05, "the same as --budget (round 1's overhead target)")
	fs.IntVar(&m.fullEvery, "full-every", 0, "fixed schedule: a full probe at every k-th due step, light probes between "+
		"(0: the budget decides with --async; every due step full with --async=false)")
	fs.IntVar(&m.blockEvery, "block-eigen-every", 0, "every k-th probe, also λ1 of each layer's diagonal Hessian block (layer-wise sharpness; "+
		"a small eigen solve of full HVPs per block; 0: off)")
	fs.Var(&m.groups, "block-group", "name=regexp: merge the parameter blocks whose names match into one block for --block-eigen-every "+
		"(repeatable; e.g. attention=attn\\.)")
	fs.StringVar(&m.bnMode, "bn-mode", "eval", "BatchNorm in the probed Hessian: eval (running statistics, as PyHessian) or train (batch statistics)")
	fs.StringVar(&m.precision, "precision", "float64", "HVP precision of the probes: float64 or float32 (MLPs; estimators stay float64; each snapshot records it)")
}

func (m *monitorFlags) config(seed uint64) (monitor.Config, trainer.Mode, error) {
	order, err := estimators.ParseOrder(m.order)
	if err != nil {
		return monitor.Config{}, 0, usageErr("--order: %v", err)
	}
	if m.blockEvery < 0 {
		return monitor.Config{}, 0, usageErr("--block-eigen-every must be ≥ 0")
	}
	if m.every <= 0 || m.top < 0 || m.maxHVPs <= 0 || m.traceHVPs <= 0 || m.probeBatch <= 0 || m.esdSteps <= 0 || m.timeout <= 0 {
		return monitor.Config{}, 0, usageErr("--every, --max-hvps, --trace-hvps, --probe-batch, --esd-steps and --probe-timeout must be positive, --top non-negative")
	}
	mode, err := parseBNMode(m.bnMode)
	if err != nil {
		return monitor.Config{}, 0, err
	}
	cfg := monitor.Config{
		Every: m.every, NoEigen: m.top == 0, TopK: m.top, Order: order, EigenTol: m.tol,
		NoTrace: !m.trace || m.noTrace, NoESD: !m.esd || m.noESD, ESDSteps: m.esdSteps,
		MaxHVPs: m.maxHVPs, TraceMaxHVPs: m.traceHVPs, MaxDuration: m.timeout, Async: m.async,
		Budget: m.overhead, FullEvery: m.fullEvery, Seed: seed,
		BlockEigenEvery: m.blockEvery, BlockGroups: m.groups,
	}
	if m.track {
		cfg = cfg.Tracking()
	}
	return cfg, mode, nil
}

// optFlags are the optimiser flags.
type optFlags struct {
	name     string
	lr       float64
	momentum float64
	wd       float64
	batch    int
	steps    int64
	epochs   float64
}

func (o *optFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.name, "opt", "sgd", "optimiser: sgd or adam")
	fs.StringVar(&o.name, "optimizer", "sgd", "the same as --opt")
	fs.Float64Var(&o.lr, "lr", 0.05, "learning rate η")
	fs.Float64Var(&o.momentum, "momentum", 0.9, "SGD momentum, or Adam's β1")
	fs.Float64Var(&o.wd, "wd", 0, "L2 weight decay")
	fs.IntVar(&o.batch, "batch", 64, "mini-batch size (0: full batch gradient descent)")
	fs.Int64Var(&o.steps, "steps", 0, "optimiser steps (overrides --epochs)")
	fs.Float64Var(&o.epochs, "epochs", 1, "epochs of training data")
}

// optimizer checks the flags and makes the optimiser.
func (o *optFlags) optimizer() (trainer.Optimizer, error) {
	opt, err := trainer.NewOptimizer(o.name, o.lr, o.momentum, o.wd)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	if o.batch < 0 || o.epochs <= 0 || o.steps < 0 {
		return nil, usageErr("--batch must be ≥ 0, --epochs > 0, --steps ≥ 0")
	}
	return opt, nil
}

func (o *optFlags) totalSteps(n int) int64 {
	if o.steps > 0 {
		return o.steps
	}
	per := n
	if o.batch > 0 {
		per = n / o.batch
	}
	return max(1, int64(math.Round(o.epochs*float64(per))))
}

// logger returns a text logger at the level named by s.
func logger(w io.Writer, s string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s)); err != nil {
		return nil, usageErr("--log-level %q: want debug, info, warn or error", s)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

func runTrain(ctx context.Context, e *env, args []string) error {
	return trainCmd(ctx, e, args, initComm)
}

// trainCmd is runTrain with the start of the MPI group passed in, so that
// tests can run --distributed over in-process ranks.
func trainCmd(ctx context.Context, e *env, args []string, newComm commInit) error {
	o, distributed, err := parseTrain(e, args)
	if err != nil {
		return err
	}
	if distributed && o.mon.precision != "float64" {
		return usageErr("--precision %s is not supported with --distributed; use --precision float64", o.mon.precision)
	}
	if distributed {
		if o.resume.resume {
			return usageErr("--resume does not work with --distributed yet (--overwrite trains a run again)")
		}
		return trainDistributed(ctx, e, o, newComm)
	}
	r, err := newLocalRun(e, o)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

// parseTrain parses train's flags.
func parseTrain(e *env, args []string) (o trainOpts, distributed bool, err error) {
	fs := newFlags(e, "train", "train a model while the monitor probes its loss Hessian every N steps: top-k eigenvalues with residuals, "+
		"trace ± stderr with per-layer blocks, and the spectral density, warm-started from the previous probe. Snapshots go to a bbolt "+
		"store; Prometheus metrics and a read-only JSON API are served on --listen while training runs. SIGINT/SIGTERM stop it cleanly.",
		"hessmon train --steps 300 --db run.db --listen 127.0.0.1:9464   # then: curl 127.0.0.1:9464/metrics")
	o.model.register(fs, "128,128", "tanh")
	o.opt.register(fs)
	o.mon.register(fs)
	fs.StringVar(&o.db, "db", "hessmon.db", "bbolt store for the snapshots (created if missing; many runs per file)")
	fs.StringVar(&o.run, "run", "", "run id (default: generated). An id is a promise: reusing one that holds snapshots is refused unless "+
		"--resume continues it, and so is resuming it with another configuration")
	o.resume.register(fs)
	fs.StringVar(&o.listen, "listen", api.DefaultAddr, "address for /metrics and the JSON API (\"off\" disables); binding beyond loopback must be asked for explicitly")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.progress, "progress", "auto", "progress bar: auto (on a terminal), on, off")
	fs.BoolVar(&distributed, "distributed", false, distributedTrainHelp)
	if err := parse(fs, args); err != nil {
		return o, false, err
	}
	o.explicit, o.overwrite = setFlags(fs), o.resume.overwrite
	return o, distributed, nil
}

// localRun is a training run in this process.
type localRun struct {
	o           trainOpts
	e           *env
	con         *console
	log         *slog.Logger
	cfg         monitor.Config
	bnMode      trainer.Mode
	opt         trainer.Optimizer
	net         *trainer.Network
	train, test *data.Dataset
	prec        snapshot.Precision
	steps       int64

	snaps    chan snapshot.Snapshot // for the log lines, printed from the training goroutine
	lastSnap snapshot.Snapshot
}

// newLocalRun checks the flags and builds the model and data.
func newLocalRun(e *env, o trainOpts) (*localRun, error) {
	r := &localRun{o: o, e: e, con: newConsole(e.stderr), snaps: make(chan snapshot.Snapshot, 64)}
	var err error
	if r.log, err = logger(r.con.logs(), o.logLevel); err != nil {
		return nil, err
	}
	if r.cfg, r.bnMode, err = o.mon.config(o.model.seed); err != nil {
		return nil, err
	}
	if r.opt, err = o.opt.optimizer(); err != nil {
		return nil, err
	}
	if r.net, r.train, r.test, err = o.model.setupProbe(o.mon.probeBatch); err != nil {
		return nil, err
	}
	if r.prec, err = probePrecision(o.mon.precision, r.net); err != nil {
		return nil, err
	}
	if r.o.run == "" {
		r.o.run = store.NewRunID()
	}
	r.steps = o.opt.totalSteps(r.train.Len())
	return r, nil
}

func (r *localRun) run(ctx context.Context) error {
	st, err := store.Open(r.o.db, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	resumeFrom, err := openRun(st, runMeta(r.o, r.net, r.opt, r.train, r.steps), r.o.resume, r.log)
	if err != nil {
		return err
	}
	exp := metrics.NewExporter()
	toLog := monitor.SinkFunc(func(s snapshot.Snapshot) error {
		select {
		case r.snaps <- s:
		default:
		}
		return nil
	})
	mon, err := monitor.New(r.o.run, r.cfg, monitor.WithSink(st), monitor.WithSink(exp), monitor.WithSink(toLog),
		monitor.WithWarmStore(st), monitor.WithLogger(r.log), monitor.WithExisting(existingPolicy(r.o.resume)))
	if err != nil {
		return err
	}
	stopSrv, err := startServing(r.o.listen, exp, st, r.log)
	if err != nil {
		return err
	}
	defer stopSrv()
	res, trainErr := r.trainWith(ctx, mon, resumeFrom, st)
	interrupted := trainErr != nil && errors.Is(trainErr, context.Canceled)
	if trainErr != nil && !interrupted {
		return trainErr
	}
	r.report(res, mon.Stats(), interrupted)
	if err := stopSrv(); err != nil {
		r.log.Warn("metrics server", "err", err)
	}
	return nil
}

// startServing starts the metrics and API server on listen, unless it is
// off, and logs its addresses. The returned stop shuts it down; calls
// after the first return the first's error.
func startServing(listen string, exp *metrics.Exporter, st *store.Store, log *slog.Logger) (stop func() error, err error) {
	if listen == "off" || listen == "" {
		return func() error { return nil }, nil
	}
	h, err := httpHandler(exp, st)
	if err != nil {
		return nil, err
	}
	at, stopSrv, err := api.Start(listen, h)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", listen, err)
	}
	base := "http://" + at.String()
	log.Info("serving", "page", base+"/", "metrics", base+"/metrics", "api", base+"/api/runs")
	var once sync.Once
	return func() error {
		once.Do(func() { err = stopSrv() })
		return err
	}, nil
}

// trainWith trains with the monitor's hook, then closes the monitor and
// logs the snapshots still queued.
func (r *localRun) trainWith(ctx context.Context, mon *monitor.Monitor, resumeFrom *trainer.Checkpoint, st *store.Store) (trainer.Result, error) {
	probeBatch := probeSubset(r.train, r.o.mon.probeBatch, r.o.model.seed)
	r.log.Info("training", "run", r.o.run, "blas", trainer.BLAS().String(), "model", r.net.String(), "params", r.net.Dim(), "data", describeData(r.train),
		"optimizer", r.opt.Name(), "lr", r.o.opt.lr, "steps", r.steps, "probe_every", r.cfg.Every, "probe_batch", probeBatch.Len(), "db", r.o.db)
	bar := r.con.progressBar(r.o.progress, r.steps)
	hooks := []trainer.Hook{hessian.Hook(mon, hessian.HookOptions{Batch: probeBatch, Mode: r.bnMode, Precision: r.prec, Logger: r.log})}
	hooks = append(hooks, func(_ context.Context, info trainer.StepInfo) error {
		if bar != nil {
			_ = bar.Set64(info.Step)
		}
		for {
			select {
			case s := <-r.snaps:
				r.lastSnap = s
				logSnapshot(r.log, s)
				continue
			default:
			}
			return nil
		}
	})
	res, trainErr := trainer.Train(ctx, trainer.Config{
		Model: r.net, Loss: trainer.CrossEntropy{}, Optimizer: r.opt, Data: r.train, BatchSize: r.o.opt.batch, Steps: r.steps,
		Seed: r.o.model.seed, Hooks: hooks,
		Resume: resumeFrom, CheckpointEvery: r.o.resume.every, SaveCheckpoint: hessian.CheckpointSaver(st.PutCheckpoint, r.o.run),
	})
	// Ctrl-C cancelled ctx: Close then drops the in-flight probe at once.
	// Otherwise the last probe finishes on every core.
	if err := mon.Close(ctx); err != nil && ctx.Err() == nil {
		r.log.Warn("closing the monitor", "err", err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	for len(r.snaps) > 0 {
		r.lastSnap = <-r.snaps
		logSnapshot(r.log, r.lastSnap)
	}
	return res, trainErr
}

// report prints the run's summary.
func (r *localRun) report(res trainer.Result, stats monitor.Stats, interrupted bool) {
	acc, accErr := trainer.Accuracy(r.net, r.test)
	w := r.e.stdout
	if interrupted {
		fmt.Fprintf(w, "interrupted at step %d of %d; every finished snapshot is committed\n", res.Steps, r.steps)
	}
	fmt.Fprintf(w, "run %s: %s, %d params, %d steps in %.1fs, last loss %.4f", r.o.run, r.net.String(), r.net.Dim(), res.Steps, res.Elapsed.Seconds(), res.LastLoss)
	if accErr == nil {
		fmt.Fprintf(w, ", test accuracy %.4f", acc)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "weights after step %d: checksum %016x\n", res.Steps, trainer.Checksum(r.net))
	fmt.Fprintf(w, "probes: %d of %d due steps measured (%d light, %d full, %d brought forward by a trigger), %d skipped, %d failed; "+
		"%d HVPs (%d light, %d full), %.1fs probing; measured overhead %.1f%% of training (budget %.0f%%)\n",
		stats.Measured, stats.Due, stats.Light, stats.Full, stats.Triggered, stats.Skipped, stats.Failures,
		stats.HVPs, stats.LightHVPs, stats.FullHVPs, stats.ProbeSeconds, 100*stats.Overhead, 100*r.cfg.Budget)
	printSummaryTail(w, r.lastSnap, r.o.db, r.o.run)
}

// runMeta describes a training run for the store.
func runMeta(o trainOpts, net *trainer.Network, opt trainer.Optimizer, train *data.Dataset, steps int64) snapshot.Run {
	return hessian.RunMeta(hessian.RunOptions{ID: o.run, Net: net, Optimizer: opt, Data: train, LR: o.opt.lr, Momentum: o.opt.momentum,
		WeightDecay: o.opt.wd, Batch: o.opt.batch, Steps: steps, Every: o.mon.every, Top: o.mon.top, ProbeBatch: o.mon.probeBatch,
		BNMode: o.mon.bnMode, Seed: o.model.seed})
}

// putRun writes the run's metadata after openRun's identity check, for a
// run that is not resumed (--distributed).
func putRun(st *store.Store, meta snapshot.Run, overwrite bool, log *slog.Logger) error {
	_, err := openRun(st, meta, resumeFlags{overwrite: overwrite}, log)
	return err
}

// printSummaryTail ends a training summary: the last probe's λ1 and trace,
// and where the snapshots are.
func printSummaryTail(w io.Writer, last snapshot.Snapshot, db, run string) {
	if l1, ok := last.Lambda1(); ok {
		fmt.Fprintf(w, "last probe (step %d): λ1 = %.5g (residual %.2g)", last.Step, l1, last.Residuals[0])
		if p := last.PreconditionedLambda1; p != nil && last.Optimizer.Adaptive() {
			fmt.Fprintf(w, ", λ1(P⁻¹H) = %.5g (residual %.2g), sharpness ratio λ1(P⁻¹H)/threshold = %.3f", p.Value, p.Residual, last.SharpnessRatio)
		} else {
			fmt.Fprintf(w, ", sharpness ratio λ1/threshold = %.3f", last.SharpnessRatio)
		}
		if last.LambdaMin != nil {
			fmt.Fprintf(w, ", λmin = %.5g", last.LambdaMin.Value)
			if r, ok := last.NegativeCurvatureRatio(); ok && r > 1 {
				fmt.Fprintf(w, " (|λmin|/λ1 = %.3g: negative curvature dominates)", r)
			}
		}
		if last.Trace != nil {
			fmt.Fprintf(w, ", trace = %.5g ± %.2g", last.Trace.Value, last.Trace.StdErr)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "store: %s (inspect: hessmon show --db %s --run %s)\n", db, db, run)
}

func logSnapshot(log *slog.Logger, s snapshot.Snapshot) {
	if s.Failed() {
		return // the monitor already logged it
	}
	attrs := []any{"step", s.Step, "loss", fmt.Sprintf("%.4f", s.Loss), "hvps", s.HVPs, "seconds", fmt.Sprintf("%.2f", s.Seconds), "warm", s.Warm}
	if l1, ok := s.Lambda1(); ok {
		attrs = append(attrs, "lambda1", fmt.Sprintf("%.5g", l1), "sharpness_ratio", fmt.Sprintf("%.3f", s.SharpnessRatio))
	}
	if s.LambdaMin != nil {
		attrs = append(attrs, "lambda_min", fmt.Sprintf("%.4g", s.LambdaMin.Value))
	}
	if p := s.PreconditionedLambda1; p != nil {
		attrs = append(attrs, "preconditioned_lambda1", fmt.Sprintf("%.5g", p.Value))
	}
	if s.Trace != nil {
		attrs = append(attrs, "trace", fmt.Sprintf("%.4g±%.2g", s.Trace.Value, s.Trace.StdErr))
	}
	log.Info("probe", attrs...)
}

// probeSubset draws the fixed, seeded probe batch.
func probeSubset(d *data.Dataset, n int, seed uint64) trainer.Batch {
	return trainer.ProbeBatch(d, n, seed)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// groupFlags collects repeated --block-group name=regexp flags.
type groupFlags []estimators.GroupRule

func (g *groupFlags) String() string {
	var parts []string
	for _, r := range *g {
		parts = append(parts, r.Name+"="+r.Pattern.String())
	}
	return strings.Join(parts, ",")
}

func (g *groupFlags) Set(s string) error {
	r, err := estimators.ParseGroupRule(s)
	if err != nil {
		return err
	}
	*g = append(*g, r)
	return nil
}
