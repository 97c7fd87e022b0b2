package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/schollz/progressbar/v3"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/distributed"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// `hessmon train --distributed`: replicated training, sharded probes.
//
// Every rank trains the same model from the same seed on the same data, so
// the weights are identical everywhere (checked at every probe). At a due
// probe each rank applies the Hessian of its contiguous shard of the fixed
// probe batch and the ranks run the monitor's estimators in lockstep on the
// all-reduced product. Rank 0 alone owns the store and the metrics server.
// The protocol that keeps the ranks' collective calls matched (handshake,
// warm-state broadcast, lockstep rounds, collective cancel and timeout) is
// package monitor/distributed; this file wires a trainer run into it.

// distributedTrainHelp is the help of train's --distributed flag.
const distributedTrainHelp = "run as one rank of an MPI job (binary built with -tags mpi, started by mpirun). Replicated " +
	"training: every rank trains the same model from the same --seed on the same data, so the weights are identical on all " +
	"ranks (checked at every probe); each probe's Hessian of the --probe-batch is sharded over the ranks and all-reduced. " +
	"Probes are synchronous (--async is ignored) on a deterministic schedule (--full-every, default every due step full; the budget only reports) and --probe-timeout stops " +
	"a probe on all ranks together; only rank 0 writes --db and serves --listen, the other ranks print errors only"

// commInit joins the process group of a distributed run. It returns this
// rank's Comm and the function that leaves the group, which every rank must
// call once, after its last collective call.
type commInit func() (hvp.Comm, func() error, error)

// trainOpts are the parsed flags of `hessmon train`.
type trainOpts struct {
	model                               modelFlags
	opt                                 optFlags
	mon                                 monitorFlags
	db, run, listen, logLevel, progress string
	resume                              resumeFlags
	explicit                            map[string]bool // flags given on the command line
	overwrite                           bool            // --overwrite: replace a reused run's snapshots
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// trainDistributed checks the flags (the same on every rank, so every rank
// decides the same before the group starts), joins the group and runs this
// rank's part.
func trainDistributed(ctx context.Context, e *env, o trainOpts, newComm commInit) (err error) {
	cfg, mode, err := o.mon.config(o.model.seed)
	if err != nil {
		return err
	}
	lcfg, lopt, err := distributed.MonitorConfig(cfg)
	if err != nil {
		return usageErr("%v", err)
	}
	opt, err := o.opt.optimizer()
	if err != nil {
		return err
	}
	if _, err := logger(io.Discard, o.logLevel); err != nil {
		return err
	}
	comm, leave, err := newComm()
	if err != nil {
		return err
	}
	defer func() {
		if lerr := leave(); lerr != nil {
			err = errors.Join(err, fmt.Errorf("leaving the process group: %w", lerr))
		}
	}()
	ls, err := distributed.NewLockstep(comm, lopt)
	if err != nil {
		return err // only for a nil Comm or a negative timeout: the same on every rank
	}
	r := &rankRun{comm: comm, rank: comm.Rank(), size: comm.Size(), o: o, cfg: cfg, lcfg: lcfg, mode: mode, opt: opt, ls: ls, out: e.stdout}
	if r.rank == 0 {
		r.con = newConsole(e.stderr)
		r.log, _ = logger(r.con.logs(), o.logLevel)
	} else {
		// The other ranks print errors only.
		r.log = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelError})).With("rank", r.rank)
		r.out = io.Discard
	}
	if err := r.run(ctx, e); err != nil {
		if r.rank != 0 {
			return fmt.Errorf("rank %d: %w", r.rank, err)
		}
		return err
	}
	return nil
}

// rankRun is one rank's part of a distributed training run.
type rankRun struct {
	comm       hvp.Comm
	rank, size int
	o          trainOpts
	cfg        monitor.Config // as the flags say
	lcfg       monitor.Config // as every rank runs it (distributed.MonitorConfig)
	mode       trainer.Mode
	opt        trainer.Optimizer
	ls         *distributed.Lockstep
	log        *slog.Logger
	con        *console // rank 0: the terminal shared by log lines and the progress bar
	out        io.Writer

	net         *trainer.Network
	train, test *data.Dataset
	steps       int64
	probe       trainer.Batch // the whole fixed probe batch
	shard       trainer.Batch // this rank's contiguous part of it
	blocks      []estimators.Block
	mon         *monitor.Monitor

	// Rank 0 only.
	st         *store.Store
	exp        *metrics.Exporter
	stopServer func() error // startServing's; nil before it
	lastSnap   snapshot.Snapshot
}

func (r *rankRun) run(ctx context.Context, e *env) error {
	setupErr := r.setup()
	defer r.closeLocal()
	if err := r.join(setupErr); err != nil {
		return err
	}
	r.log.Info("training", "run", r.o.run, "blas", trainer.BLAS().String(), "ranks", r.size, "model", r.net.String(), "params", r.net.Dim(), "data", describeData(r.train),
		"optimizer", r.opt.Name(), "lr", r.o.opt.lr, "steps", r.steps, "probe_every", r.lcfg.Every, "probe_batch", r.probe.Len(),
		"probe_shard", r.shard.Len(), "db", r.o.db)

	var bar *progressbar.ProgressBar
	if r.rank == 0 {
		bar = r.con.progressBar(r.o.progress, r.steps)
	}
	res, interrupted, err := hessian.TrainDistributed(ctx, trainer.Config{
		Model: r.net, Loss: trainer.CrossEntropy{}, Optimizer: r.opt, Data: r.train, BatchSize: r.o.opt.batch, Steps: r.steps,
		Seed: r.o.model.seed, Hooks: []trainer.Hook{r.stepHook(bar)},
	}, hessian.DistributedOptions{Lockstep: r.ls, Monitor: r.mon, Run: r.o.run, Shard: r.shard, Mode: r.mode, Blocks: r.blocks, Logger: r.log,
		OnProbe: r.onProbe, BeforeFinish: r.stopServing, AfterTrain: func() {
			if bar != nil {
				_ = bar.Finish()
			}
		}})
	if err != nil {
		return err
	}
	r.report(res, interrupted)
	return nil
}

// join shares this rank's set-up outcome and the warm state with the
// group and creates the monitor, the same way on every rank.
func (r *rankRun) join(setupErr error) error {
	check := hessian.ReplicaCheck{Net: r.net, Steps: r.steps, Every: r.cfg.Every, ProbeBatch: r.probe.Len()}
	if err := hessian.HandshakeReplica(r.comm, setupErr, check); err != nil {
		return err
	}
	var local monitor.WarmStore
	if r.st != nil {
		local = r.st
	}
	warm, err := distributed.ShareWarm(r.comm, local, r.o.run)
	if err != nil {
		return err
	}
	if r.o.explicit["async"] && r.cfg.Async {
		r.log.Warn("--async is ignored with --distributed: probes are synchronous, so that every rank applies the same Hessian-vector products in lockstep")
	}
	if r.mode == trainer.ModeTrain && r.o.model.bn && r.size > 1 {
		r.log.Warn("--bn-mode train: BatchNorm uses each rank's shard's batch statistics, so the probed Hessian differs from " +
			"one process's on the whole probe batch (as in data-parallel training without SyncBN); eval mode is identical")
	}
	opts := []monitor.Option{monitor.WithWarmStore(warm), monitor.WithLogger(r.log), monitor.WithExisting(existingPolicy(resumeFlags{overwrite: r.o.overwrite}))}
	if r.rank == 0 {
		opts = append(opts, monitor.WithSink(r.st), monitor.WithSink(r.exp))
	}
	r.mon, err = monitor.New(r.o.run, r.lcfg, opts...)
	return err // the same on every rank: it depends on the flags only
}

// stepHook is the training hook before the probe: metrics and progress
// on rank 0.
func (r *rankRun) stepHook(bar *progressbar.ProgressBar) trainer.Hook {
	return func(ctx context.Context, info trainer.StepInfo) error {
		if r.exp != nil {
			r.exp.ObserveTraining(r.o.run, info.Step, info.Loss, info.LearningRate)
		}
		if bar != nil {
			_ = bar.Set64(info.Step)
		}
		return nil
	}
}

// onProbe logs rank 0's snapshots and keeps the last for the summary.
func (r *rankRun) onProbe(s snapshot.Snapshot) {
	if r.rank == 0 {
		r.lastSnap = s
		logSnapshot(r.log, s)
	}
}

// setup does this rank's local set-up; an error is shared in the handshake.
func (r *rankRun) setup() error {
	var err error
	r.net, r.train, r.test, err = r.o.model.setupProbe(r.o.mon.probeBatch)
	if err != nil {
		return err
	}
	r.steps = r.o.opt.totalSteps(r.train.Len())
	r.blocks = hessian.Blocks(r.net)
	r.probe = probeSubset(r.train, r.o.mon.probeBatch, r.o.model.seed)
	if r.shard, err = hessian.ShardBatch(r.probe, r.comm); err != nil {
		return fmt.Errorf("--probe-batch %d over %d ranks: %w", r.probe.Len(), r.size, err)
	}
	if r.rank != 0 {
		if r.o.run == "" {
			r.o.run = fmt.Sprintf("rank-%d", r.rank) // rank 0's id names the run; this one is never written
		}
		return nil
	}
	if r.o.run == "" {
		r.o.run = store.NewRunID()
	}
	if r.st, err = store.Open(r.o.db, store.Options{}); err != nil {
		return err
	}
	meta := runMeta(r.o, r.net, r.opt, r.train, r.steps)
	meta.Config["ranks"] = fmt.Sprint(r.size)
	meta.Config["distributed"] = "replicated training; probe batch sharded over the ranks"
	if err := putRun(r.st, meta, r.o.overwrite, r.log); err != nil {
		return err
	}
	r.exp = metrics.NewExporter()
	r.stopServer, err = startServing(r.o.listen, r.exp, r.st, r.log)
	return err
}

// stopServing shuts rank 0's server down, once.
func (r *rankRun) stopServing() {
	if r.stopServer == nil {
		return
	}
	if err := r.stopServer(); err != nil {
		r.log.Warn("metrics server", "err", err)
	}
	r.stopServer = nil
}

// closeLocal releases what setup opened (rank 0: the server if training
// never stopped it, and the store).
func (r *rankRun) closeLocal() {
	r.stopServing()
	if r.st != nil {
		if err := r.st.Close(); err != nil {
			r.log.Error("closing the store", "err", err)
		}
	}
}

// report prints rank 0's summary.
func (r *rankRun) report(res trainer.Result, interrupted bool) {
	if r.rank != 0 {
		return
	}
	stats, hvps := r.mon.Stats(), r.ls.Stats()
	r.log.Info("distributed HVPs", "ranks", r.size, "probe_samples_per_rank", r.shard.Len(), "hvps", hvps.Applies,
		"local_seconds", hvps.Local.Seconds(), "allreduce_seconds", hvps.Reduce.Seconds(), "allreduce_share", hvps.ReduceShare())
	w := r.out
	if interrupted {
		fmt.Fprintf(w, "interrupted at step %d of %d; every finished snapshot is committed\n", res.Steps, r.steps)
	}
	fmt.Fprintf(w, "run %s: %s, %d params, %d steps in %.1fs on %d ranks (replicated), last loss %.4f", r.o.run, r.net.String(), r.net.Dim(),
		res.Steps, res.Elapsed.Seconds(), r.size, res.LastLoss)
	if acc, err := trainer.Accuracy(r.net, r.test); err == nil {
		fmt.Fprintf(w, ", test accuracy %.4f", acc)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "probes: %d (%d failed), %d HVPs all-reduced over %d ranks, %.1fs probing\n",
		stats.Probes, stats.Failures, stats.HVPs, r.size, stats.ProbeSeconds)
	printSummaryTail(w, r.lastSnap, r.o.db, r.o.run)
}
