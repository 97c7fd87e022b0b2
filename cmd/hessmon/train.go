package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"
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

func newRunID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
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
	fs := newFlags(e, "train", "train a model while the monitor probes its loss Hessian every N steps: top-k eigenvalues with residuals, "+
		"trace ± stderr with per-layer blocks, and the spectral density, warm-started from the previous probe. Snapshots go to a bbolt "+
		"store; Prometheus metrics and a read-only JSON API are served on --listen while training runs. SIGINT/SIGTERM stop it cleanly.",
		"hessmon train --steps 300 --db run.db --listen 127.0.0.1:9464   # then: curl 127.0.0.1:9464/metrics")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	var of optFlags
	of.register(fs)
	var monf monitorFlags
	monf.register(fs)
	db := fs.String("db", "hessmon.db", "bbolt store for the snapshots (created if missing; many runs per file)")
	runID := fs.String("run", "", "run id (default: generated). An id is a promise: reusing one that holds snapshots is refused unless "+
		"--resume continues it, and so is resuming it with another configuration")
	var rf resumeFlags
	rf.register(fs)
	listen := fs.String("listen", api.DefaultAddr, "address for /metrics and the JSON API (\"off\" disables); binding beyond loopback must be asked for explicitly")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	progress := fs.String("progress", "auto", "progress bar: auto (on a terminal), on, off")
	distributed := fs.Bool("distributed", false, distributedTrainHelp)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *distributed && monf.precision != "float64" {
		return usageErr("--precision %s is not supported with --distributed; use --precision float64", monf.precision)
	}
	if *distributed {
		if rf.resume {
			return usageErr("--resume does not work with --distributed yet (--overwrite trains a run again)")
		}
		return trainDistributed(ctx, e, trainOpts{model: mf, opt: of, mon: monf, db: *db, run: *runID, listen: *listen,
			logLevel: *logLevel, progress: *progress, explicit: setFlags(fs), overwrite: rf.overwrite}, newComm)
	}
	con := newConsole(e.stderr)
	log, err := logger(con.logs(), *logLevel)
	if err != nil {
		return err
	}
	cfg, bnMode, err := monf.config(mf.seed)
	if err != nil {
		return err
	}
	opt, err := trainer.NewOptimizer(of.name, of.lr, of.momentum, of.wd)
	if err != nil {
		return usageErr("%v", err)
	}
	if of.batch < 0 || of.epochs <= 0 || of.steps < 0 {
		return usageErr("--batch must be ≥ 0, --epochs > 0, --steps ≥ 0")
	}
	net, train, test, err := mf.setupProbe(monf.probeBatch)
	if err != nil {
		return err
	}
	prec, err := probePrecision(monf.precision, net)
	if err != nil {
		return err
	}
	if *runID == "" {
		*runID = newRunID()
	}
	steps := of.totalSteps(train.Len())

	st, err := store.Open(*db, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	resumeFrom, err := openRun(st, runMeta(*runID, net, opt, train, mf, of, monf, steps), rf, log)
	if err != nil {
		return err
	}
	exp := metrics.NewExporter()
	snaps := make(chan snapshot.Snapshot, 64) // for the log lines, printed from the training goroutine
	toLog := monitor.SinkFunc(func(s snapshot.Snapshot) error {
		select {
		case snaps <- s:
		default:
		}
		return nil
	})
	mon, err := monitor.New(*runID, cfg, monitor.WithSink(st), monitor.WithSink(exp), monitor.WithSink(toLog),
		monitor.WithWarmStore(st), monitor.WithLogger(log), monitor.WithExisting(existingPolicy(rf)))
	if err != nil {
		return err
	}

	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	srvDone := make(chan error, 1)
	if *listen != "off" && *listen != "" {
		ln, err := listenTCP(*listen)
		if err != nil {
			return fmt.Errorf("--listen %s: %w", *listen, err)
		}
		h, err := httpHandler(exp, st)
		if err != nil {
			return err
		}
		go func() { srvDone <- api.ServeListener(srvCtx, ln, h) }()
		log.Info("serving", "page", pageURL(ln), "metrics", "http://"+ln.Addr().String()+"/metrics", "api", "http://"+ln.Addr().String()+"/api/runs")
	} else {
		srvDone <- nil
	}

	probeBatch := probeSubset(train, monf.probeBatch, mf.seed)
	log.Info("training", "run", *runID, "blas", trainer.BLAS().String(), "model", net.String(), "params", net.Dim(), "data", describeData(train),
		"optimizer", opt.Name(), "lr", of.lr, "steps", steps, "probe_every", cfg.Every, "probe_batch", probeBatch.Len(), "db", *db)

	bar := con.progressBar(*progress, steps)
	var lastSnap snapshot.Snapshot
	hooks := []trainer.Hook{hessian.Hook(mon, hessian.HookOptions{Batch: probeBatch, Mode: bnMode, Precision: prec, Logger: log})}
	hooks = append(hooks, func(_ context.Context, info trainer.StepInfo) error {
		if bar != nil {
			_ = bar.Set64(info.Step)
		}
		for {
			select {
			case s := <-snaps:
				lastSnap = s
				logSnapshot(log, s)
				continue
			default:
			}
			return nil
		}
	})
	res, trainErr := trainer.Train(ctx, trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: opt, Data: train, BatchSize: of.batch, Steps: steps, Seed: mf.seed, Hooks: hooks,
		Resume: resumeFrom, CheckpointEvery: rf.every, SaveCheckpoint: checkpointSaver(st, *runID),
	})
	// Ctrl-C cancelled ctx: Close then drops the in-flight probe at once.
	// Otherwise the last probe finishes on every core.
	if err := mon.Close(ctx); err != nil && ctx.Err() == nil {
		log.Warn("closing the monitor", "err", err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	for len(snaps) > 0 {
		lastSnap = <-snaps
		logSnapshot(log, lastSnap)
	}
	interrupted := trainErr != nil && errors.Is(trainErr, context.Canceled)
	if trainErr != nil && !interrupted {
		return trainErr
	}
	acc, accErr := trainer.Accuracy(net, test)
	stats := mon.Stats()
	w := e.stdout
	if interrupted {
		fmt.Fprintf(w, "interrupted at step %d of %d; every finished snapshot is committed\n", res.Steps, steps)
	}
	fmt.Fprintf(w, "run %s: %s, %d params, %d steps in %.1fs, last loss %.4f", *runID, net.String(), net.Dim(), res.Steps, res.Elapsed.Seconds(), res.LastLoss)
	if accErr == nil {
		fmt.Fprintf(w, ", test accuracy %.4f", acc)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "weights after step %d: checksum %016x\n", res.Steps, trainer.Checksum(net))
	fmt.Fprintf(w, "probes: %d of %d due steps measured (%d light, %d full, %d brought forward by a trigger), %d skipped, %d failed; "+
		"%d HVPs (%d light, %d full), %.1fs probing; measured overhead %.1f%% of training (budget %.0f%%)\n",
		stats.Measured, stats.Due, stats.Light, stats.Full, stats.Triggered, stats.Skipped, stats.Failures,
		stats.HVPs, stats.LightHVPs, stats.FullHVPs, stats.ProbeSeconds, 100*stats.Overhead, 100*cfg.Budget)
	printSummaryTail(w, lastSnap, *db, *runID)
	stopSrv()
	if err := <-srvDone; err != nil {
		log.Warn("metrics server", "err", err)
	}
	return nil
}

// runMeta describes a training run for the store.
func runMeta(id string, net *trainer.Network, opt trainer.Optimizer, train *data.Dataset, mf modelFlags, of optFlags, monf monitorFlags, steps int64) snapshot.Run {
	r := snapshot.Run{ID: id, Model: net.String(), Optimizer: snapshot.Optimizer(opt.Name()), Started: time.Now().UTC(), Config: map[string]string{
		"data": describeData(train), "params": fmt.Sprint(net.Dim()), "lr": fmt.Sprint(of.lr), "momentum": fmt.Sprint(of.momentum),
		"batch": fmt.Sprint(of.batch), "steps": fmt.Sprint(steps), "every": fmt.Sprint(monf.every), "top": fmt.Sprint(monf.top),
		"probe_batch": fmt.Sprint(monf.probeBatch), "bn_mode": monf.bnMode, "seed": fmt.Sprint(mf.seed),
	}}
	if of.wd != 0 { // only when set, so that runs stored before it was recorded still match
		r.Config["wd"] = fmt.Sprint(of.wd)
	}
	return r
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
	b := trainer.NewBatcher(d, n, seed^0x70be)
	batch, _ := b.Next()
	return batch
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func listenTCP(addr string) (net.Listener, error) { return net.Listen("tcp", addr) }

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
