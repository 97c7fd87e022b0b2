package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/monitor/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// `hessmon train --distributed`: replicated training, sharded probes.
//
// Every rank trains the same model from the same seed on the same data, so
// the weights are identical everywhere (checked at every probe). At a due
// probe each rank applies the Hessian of its contiguous shard of the fixed
// probe batch and hvp.AllReduce sums the shard products, so every rank holds
// the same global product and runs the monitor's estimators in lockstep.
// Rank 0 alone owns the store and the metrics server.
//
// The ranks must make the same collective calls in the same order, or one
// waits forever in an all-reduce that another never enters. Hence:
//   - probes are synchronous and the interval is fixed (no --async, no
//     --overhead), so every rank probes at the same steps;
//   - the wall-time budget and SIGINT act collectively: before every
//     Hessian-vector product the ranks all-reduce two flags (interrupted,
//     over time), and all stop the probe at the same product;
//   - a rank that stops between probes (interrupted, failed, done) posts one
//     last lockstep round on its way out, which meets the other ranks' next
//     probe round; the first round in which any rank says stop is the last
//     for every rank;
//   - set-up failures (data, store, listener) are exchanged in a handshake,
//     so all ranks give up together.

// distributedTrainHelp is the help of train's --distributed flag.
const distributedTrainHelp = "run as one rank of an MPI job (binary built with -tags mpi, started by mpirun). Replicated " +
	"training: every rank trains the same model from the same --seed on the same data, so the weights are identical on all " +
	"ranks (checked at every probe); each probe's Hessian of the --probe-batch is sharded over the ranks and all-reduced. " +
	"Probes are synchronous (--async is ignored), the interval is fixed (--overhead is refused) and --probe-timeout stops " +
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
	explicit                            map[string]bool // flags given on the command line
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// noProbeTimeout switches off the monitor's own probe timer, which runs on
// each rank separately; lockstepOp enforces --probe-timeout collectively.
const noProbeTimeout = 100 * 365 * 24 * time.Hour

// trainDistributed checks the flags (the same on every rank, so every rank
// decides the same before the group starts), joins the group and runs this
// rank's part.
func trainDistributed(ctx context.Context, e *env, o trainOpts, newComm commInit) (err error) {
	if o.mon.overhead != 0 {
		return usageErr("--overhead cannot be used with --distributed: it adapts the interval to each rank's own timings, " +
			"so the ranks would probe at different steps and wait for each other forever; set a fixed --every")
	}
	cfg, mode, err := o.mon.config(o.model.seed)
	if err != nil {
		return err
	}
	opt, err := trainer.NewOptimizer(o.opt.name, o.opt.lr, o.opt.momentum, o.opt.wd)
	if err != nil {
		return usageErr("%v", err)
	}
	if o.opt.batch < 0 || o.opt.epochs <= 0 || o.opt.steps < 0 {
		return usageErr("--batch must be ≥ 0, --epochs > 0, --steps ≥ 0")
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
	r := &rankRun{comm: comm, rank: comm.Rank(), size: comm.Size(), o: o, cfg: cfg, mode: mode, opt: opt,
		ls: &lockstep{comm: comm, failed: -1}, out: e.stdout}
	if r.rank == 0 {
		r.log, _ = logger(e.stderr, o.logLevel)
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
	cfg        monitor.Config
	mode       trainer.Mode
	opt        trainer.Optimizer
	ls         *lockstep
	log        *slog.Logger
	out        io.Writer

	net         *trainer.Network
	train, test *trainer.Dataset
	steps       int64
	probe       trainer.Batch // the whole fixed probe batch
	shard       trainer.Batch // this rank's contiguous part of it
	blocks      []estimators.Block
	timeout     time.Duration
	mon         *monitor.Monitor

	// Rank 0 only.
	st       *store.Store
	exp      *metrics.Exporter
	warm     []byte // rank 0's warm state as loaded from the store
	warmLen  int    // its length, which every rank learns in the handshake
	listener net.Listener
	serve    func(context.Context) error
	lastSnap snapshot.Snapshot
	hvpStats hvp.AllReduceStats
}

func (r *rankRun) run(ctx context.Context, e *env) error {
	setupErr := r.setup()
	defer r.closeLocal()
	if err := r.handshake(setupErr); err != nil {
		return err
	}
	warm, err := r.shareWarm()
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
	r.timeout = r.cfg.MaxDuration
	cfg := r.cfg
	cfg.Async, cfg.OverheadTarget, cfg.MaxDuration = false, 0, noProbeTimeout
	opts := []monitor.Option{monitor.WithWarmStore(warm), monitor.WithLogger(r.log)}
	if r.rank == 0 {
		opts = append(opts, monitor.WithSink(r.st), monitor.WithSink(r.exp))
	}
	r.mon, err = monitor.New(r.o.run, cfg, opts...)
	if err != nil {
		return err // the same on every rank: it depends on the flags only
	}

	srvCtx, stopSrv := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSrv()
	srvDone := make(chan error, 1)
	if r.serve != nil {
		go func() { srvDone <- r.serve(srvCtx) }()
	} else {
		srvDone <- nil
	}
	r.log.Info("training", "run", r.o.run, "ranks", r.size, "model", r.net.String(), "params", r.net.Dim(), "data", describeData(r.train),
		"optimizer", r.opt.Name(), "lr", r.o.opt.lr, "steps", r.steps, "probe_every", cfg.Every, "probe_batch", r.probe.Len(),
		"probe_shard", r.shard.Len(), "db", r.o.db)

	var bar *progressbar.ProgressBar
	if r.rank == 0 {
		bar = progressBar(e, r.o.progress, r.steps)
	}
	hook := func(ctx context.Context, info trainer.StepInfo) error {
		if r.exp != nil {
			r.exp.ObserveTraining(r.o.run, info.Step, info.Loss, info.LearningRate)
		}
		if bar != nil {
			_ = bar.Set64(info.Step)
		}
		if !r.mon.Due(info.Step) {
			return nil
		}
		code := goOn
		if ctx.Err() != nil {
			code = stopInterrupted
		}
		if err := r.ls.round(info.Step, code, info.Model); err != nil {
			return err
		}
		return r.probeStep(ctx, info)
	}
	res, trainErr := trainer.Train(ctx, trainer.Config{
		Model: r.net, Loss: trainer.CrossEntropy{}, Optimizer: r.opt, Data: r.train, BatchSize: r.o.opt.batch, Steps: r.steps,
		Seed: r.o.model.seed, Hooks: []trainer.Hook{hook},
	})
	if bar != nil {
		_ = bar.Finish()
	}
	// Probes are synchronous, so nothing is in flight: Close only writes
	// the newest warm state (rank 0; the others drop it). It is local, not
	// collective.
	if err := r.mon.Close(context.WithoutCancel(ctx)); err != nil {
		r.log.Error("closing the monitor", "err", err)
	}
	stopSrv()
	if err := <-srvDone; err != nil {
		r.log.Warn("metrics server", "err", err)
	}
	peerStop := errors.Is(trainErr, errLockstepStop)
	cancelled := errors.Is(trainErr, context.Canceled) && !r.ls.left
	var ownErr error
	switch {
	case trainErr == nil, peerStop, cancelled:
	case r.ls.left:
		return trainErr // a lockstep error (diverged replicas, process group): every rank returns it
	default:
		ownErr = trainErr // e.g. the loss diverged
	}
	if !r.ls.left {
		// This rank leaves between probes: one last round meets the
		// others' next probe round (or their own last round).
		code := stopFinished
		switch {
		case ownErr != nil:
			code = stopFailed
		case cancelled:
			code = stopInterrupted
		}
		if err := r.ls.round(res.Steps, code, r.net); err != nil && !errors.Is(err, errLockstepStop) {
			return errors.Join(ownErr, err)
		}
	}
	switch {
	case ownErr != nil:
		return ownErr
	case r.ls.failed >= 0:
		return fmt.Errorf("training stopped at step %d because rank %d failed (see its error)", res.Steps, r.ls.failed)
	case peerStop && !r.ls.interrupted:
		return fmt.Errorf("training stopped at step %d of %d because another rank finished early", res.Steps, r.steps)
	}
	r.report(res, cancelled || peerStop)
	return nil
}

// setup does this rank's local set-up; an error is shared in the handshake.
func (r *rankRun) setup() error {
	var err error
	r.net, r.train, r.test, err = r.o.model.setup()
	if err != nil {
		return err
	}
	r.steps = r.o.opt.totalSteps(r.train.Len())
	r.blocks = hessian.Blocks(r.net)
	r.probe = probeSubset(r.train, r.o.mon.probeBatch, r.o.model.seed)
	if r.shard, err = shardBatch(r.probe, r.comm); err != nil {
		return fmt.Errorf("--probe-batch %d over %d ranks: %w", r.probe.Len(), r.size, err)
	}
	if r.rank != 0 {
		if r.o.run == "" {
			r.o.run = fmt.Sprintf("rank-%d", r.rank) // rank 0's id names the run; this one is never written
		}
		return nil
	}
	if r.o.run == "" {
		r.o.run = newRunID()
	}
	if r.st, err = store.Open(r.o.db, store.Options{}); err != nil {
		return err
	}
	meta := runMeta(r.o.run, r.net, r.opt, r.train, r.o.model, r.o.opt, r.o.mon, r.steps)
	meta.Config["ranks"] = fmt.Sprint(r.size)
	meta.Config["distributed"] = "replicated training; probe batch sharded over the ranks"
	if err := putRun(r.st, meta, r.log); err != nil {
		return err
	}
	if r.warm, err = r.st.Warm(r.o.run); err != nil {
		return fmt.Errorf("loading the warm state: %w", err)
	}
	r.exp = metrics.NewExporter()
	if r.o.listen != "off" && r.o.listen != "" {
		ln, err := listenTCP(r.o.listen)
		if err != nil {
			return fmt.Errorf("--listen %s: %w", r.o.listen, err)
		}
		r.listener = ln
		srv, err := httpHandler(r.exp, r.st)
		if err != nil {
			return err
		}
		r.serve = func(ctx context.Context) error { return metrics.ServeListener(ctx, ln, srv) }
		r.log.Info("serving", "metrics", "http://"+ln.Addr().String()+"/metrics", "api", "http://"+ln.Addr().String()+"/api/runs")
	}
	return nil
}

// closeLocal releases what setup opened (rank 0: the store, the listener
// if it was never served).
func (r *rankRun) closeLocal() {
	if r.listener != nil && r.serve == nil {
		_ = r.listener.Close()
	}
	if r.st != nil {
		if err := r.st.Close(); err != nil {
			r.log.Error("closing the store", "err", err)
		}
	}
}

// Handshake record, one row per rank.
const (
	hsFailed = iota
	hsDim
	hsSteps
	hsEvery
	hsProbe
	hsWarmLen
	hsSum
	hsSumSq
	hsWeighted
	hsRowLen
)

// handshake is the first collective call: every rank posts whether its
// set-up failed and what it is about to run. If any rank failed, or the
// ranks disagree on the model, the schedule or the initial weights, every
// rank returns an error.
func (r *rankRun) handshake(setupErr error) error {
	table := make([]float64, hsRowLen*r.size)
	row := table[r.rank*hsRowLen : (r.rank+1)*hsRowLen]
	if setupErr != nil {
		row[hsFailed] = 1
	} else {
		row[hsDim], row[hsSteps], row[hsEvery], row[hsProbe] = float64(r.net.Dim()), float64(r.steps), float64(r.cfg.Every), float64(r.probe.Len())
		row[hsWarmLen] = float64(len(r.warm))
		row[hsSum], row[hsSumSq], row[hsWeighted] = checksum(r.net)
	}
	if err := r.comm.AllreduceSum(table); err != nil {
		return errors.Join(setupErr, fmt.Errorf("--distributed: set-up handshake: %w", err))
	}
	if setupErr != nil {
		return setupErr
	}
	var failed []int
	for q := range r.size {
		if table[q*hsRowLen+hsFailed] != 0 {
			failed = append(failed, q)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("--distributed: set-up failed on rank(s) %v (see their errors)", failed)
	}
	r.warmLen = int(table[hsWarmLen]) // rank 0 loads it, the others post 0
	names := [hsRowLen]string{hsDim: "parameter count", hsSteps: "steps", hsEvery: "--every", hsProbe: "probe batch size",
		hsSum: "initial weights", hsSumSq: "initial weights", hsWeighted: "initial weights"}
	for q := 1; q < r.size; q++ {
		for _, f := range []int{hsDim, hsSteps, hsEvery, hsProbe, hsSum, hsSumSq, hsWeighted} {
			a, b := table[f], table[q*hsRowLen+f]
			if math.Float64bits(a) != math.Float64bits(b) {
				return fmt.Errorf("--distributed: rank %d's %s (%.17g) differs from rank 0's (%.17g): every rank must run the same binary with the same flags and data",
					q, names[f], b, a)
			}
		}
	}
	return nil
}

// sharedWarm is the monitor's warm store on every rank: the state rank 0
// loaded, broadcast, so that every rank's first probe starts from the same
// vectors. Rank 0 saves new states to its store; the other ranks drop them.
type sharedWarm struct {
	state []byte
	save  monitor.WarmStore // nil except on rank 0
}

func (w sharedWarm) Warm(string) ([]byte, error) { return w.state, nil }

func (w sharedWarm) PutWarm(run string, b []byte) error {
	if w.save == nil {
		return nil
	}
	return w.save.PutWarm(run, b)
}

// shareWarm broadcasts rank 0's warm state (its length travelled in the
// handshake) and checks that every rank received the same bytes.
func (r *rankRun) shareWarm() (sharedWarm, error) {
	state, decodeErr := broadcastBytes(r.comm, r.warm, r.warmLen)
	// Every rank posts a hash of what it holds; all compare with rank 0.
	table := make([]float64, 2*r.size)
	h := fnv.New64a()
	_, _ = h.Write(state)
	sum := h.Sum64()
	table[2*r.rank], table[2*r.rank+1] = float64(sum>>32), float64(sum&0xffffffff)
	if decodeErr != nil {
		table[2*r.rank] = -1
	}
	if err := r.comm.AllreduceSum(table); err != nil {
		return sharedWarm{}, fmt.Errorf("--distributed: sharing the warm state: %w", err)
	}
	for q := 1; q < r.size; q++ {
		if table[2*q] != table[0] || table[2*q+1] != table[1] {
			return sharedWarm{}, errors.Join(decodeErr, fmt.Errorf("--distributed: rank %d received a different warm state from rank 0", q))
		}
	}
	w := sharedWarm{state: state}
	if r.rank == 0 {
		w.save = r.st
	}
	return w, nil
}

// bytesPerFloat bytes of a broadcast travel in one float64, as an integer
// below 2⁴⁸: a float64 holds it exactly and a sum with zeros leaves it bit
// for bit (raw bit patterns would not survive: −0 + 0 = +0, NaN payloads).
const (
	bytesPerFloat  = 6
	broadcastChunk = 1 << 20 // floats per all-reduce
)

// broadcastBytes sends rank 0's n bytes b to every rank through
// AllreduceSum, the other ranks contributing zeros. It is collective; every
// rank makes the same calls (they depend on n only) even if decoding fails.
func broadcastBytes(comm hvp.Comm, b []byte, n int) ([]byte, error) {
	out := make([]byte, n)
	if comm.Rank() == 0 {
		copy(out, b)
	}
	var decodeErr error
	buf := make([]float64, min(broadcastChunk, (n+bytesPerFloat-1)/bytesPerFloat))
	for off := 0; off < n; off += broadcastChunk * bytesPerFloat {
		part := out[off:min(n, off+broadcastChunk*bytesPerFloat)]
		words := buf[:(len(part)+bytesPerFloat-1)/bytesPerFloat]
		clear(words)
		if comm.Rank() == 0 {
			for i := range words {
				var v uint64
				for j := range bytesPerFloat {
					if k := i*bytesPerFloat + j; k < len(part) {
						v |= uint64(part[k]) << (8 * j)
					}
				}
				words[i] = float64(v)
			}
		}
		if err := comm.AllreduceSum(words); err != nil {
			return nil, fmt.Errorf("broadcasting %d bytes: %w", n, err)
		}
		if comm.Rank() == 0 {
			continue
		}
		for i, f := range words {
			if !(f >= 0 && f < 1<<(8*bytesPerFloat)) || f != math.Trunc(f) {
				decodeErr = fmt.Errorf("broadcast word %d is %g, not a %d-byte integer", off/bytesPerFloat+i, f, bytesPerFloat)
				continue
			}
			v := uint64(f)
			for j := range bytesPerFloat {
				if k := i*bytesPerFloat + j; k < len(part) {
					part[k] = byte(v >> (8 * j))
				}
			}
		}
	}
	return out, decodeErr
}

// shardBatch returns comm's rank's contiguous part of b (see hvp.Shard).
func shardBatch(b trainer.Batch, comm hvp.Comm) (trainer.Batch, error) {
	d := &trainer.Dataset{X: b.X.Data, Labels: b.Labels, Shape: b.X.Shape}
	shard, err := hessian.ShardDataset(d, comm)
	if err != nil {
		return trainer.Batch{}, err
	}
	return shard.Head(0), nil
}

// probeStep runs one due probe on the all-reduced Hessian of the probe
// batch. The monitor records it on rank 0; on every rank it advances the
// same warm state.
func (r *rankRun) probeStep(ctx context.Context, info trainer.StepInfo) error {
	meta := hessian.StepInfo(info)
	meta.Blocks = r.blocks
	var local hvp.Operator
	exact, localErr := hessian.NewExact(info.Model, r.shard, info.LossFn, r.mode)
	if localErr == nil {
		local = exact
	}
	// NewAllReduce is collective and fails on every rank if it fails on one.
	ar, err := hvp.NewAllReduce(r.comm, local, r.shard.Len())
	// The probe's context is not the training context: a cancellation seen
	// by one rank only would make it skip a product the others wait for.
	// lockstepOp cancels it once all ranks know.
	probeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var op hvp.Operator
	var lop *lockstepOp
	if err != nil {
		op = failingOp{dim: info.Model.Dim(), err: fmt.Errorf("building the HVP operator: %w", errors.Join(localErr, err))}
	} else {
		meta.Loss = ar.Loss()
		lop = &lockstepOp{ls: r.ls, ar: ar, ctx: ctx, cancel: cancel, deadline: time.Now().Add(r.timeout), timeout: r.timeout}
		op = lop
	}
	s, err := r.mon.Probe(probeCtx, info.Step, op, meta)
	if lop != nil {
		st := ar.Stats()
		r.hvpStats.Applies += st.Applies
		r.hvpStats.Local += st.Local
		r.hvpStats.Reduce += st.Reduce
	}
	if lop != nil && lop.err != nil {
		return lop.err // the process group failed
	}
	if r.ls.left {
		return errLockstepStop // interrupted on some rank during the probe: nothing recorded
	}
	if err != nil {
		r.log.Error("recording probe", "run", r.o.run, "step", info.Step, "err", err)
	}
	if r.rank == 0 {
		r.lastSnap = s
		logSnapshot(r.log, s)
	}
	return nil
}

// failingOp turns an operator construction error into a recorded failure.
type failingOp struct {
	dim int
	err error
}

func (f failingOp) Dim() int                   { return f.dim }
func (f failingOp) Apply(_, _ []float64) error { return f.err }

// lockstepOp is the all-reduced Hessian with collective stops: before each
// product the ranks all-reduce whether any was interrupted or is over the
// wall-time budget, and then all apply the product or all stop at it.
type lockstepOp struct {
	ls       *lockstep
	ar       *hvp.AllReduce
	ctx      context.Context // the training context (SIGINT)
	cancel   func()          // cancels the probe's context
	deadline time.Time
	timeout  time.Duration
	err      error // a failure of the process group
}

func (o *lockstepOp) Dim() int { return o.ar.Dim() }

func (o *lockstepOp) Apply(dst, v []float64) error {
	if o.err != nil {
		return o.err
	}
	var flags [2]float64
	if o.ctx.Err() != nil {
		flags[0] = 1
	}
	if !time.Now().Before(o.deadline) {
		flags[1] = 1
	}
	if err := o.ls.comm.AllreduceSum(flags[:]); err != nil {
		o.ls.left = true
		o.err = fmt.Errorf("--distributed: probe flags: %w", err)
		o.cancel()
		return o.err
	}
	switch {
	case flags[0] > 0:
		o.ls.left, o.ls.interrupted = true, true
		o.cancel()
		return fmt.Errorf("probe stopped: interrupted on %g rank(s): %w", flags[0], context.Canceled)
	case flags[1] > 0:
		return fmt.Errorf("probe wall-time budget %v exceeded on %g rank(s): %w", o.timeout, flags[1], context.DeadlineExceeded)
	}
	return o.ar.Apply(dst, v)
}

// Stop codes a rank posts in a lockstep round.
const (
	goOn = iota
	stopFinished
	stopInterrupted
	stopFailed
)

// Lockstep round record, one row per rank.
const (
	lsStep = iota
	lsStop
	lsSum
	lsSumSq
	lsWeighted
	lsRowLen
)

// errLockstepStop ends training on a rank because some rank stopped.
var errLockstepStop = errors.New("training stopped on every rank because one rank stopped")

// lockstep keeps the ranks' collective calls matched (see the top of this
// file) and checks that the replicated weights stay identical.
type lockstep struct {
	comm        hvp.Comm
	left        bool // a round said stop: this rank makes no more collective calls
	interrupted bool // some rank was interrupted
	failed      int  // the first other rank that failed, or -1
}

// round posts this rank's step, stop code and weight checksum, and reads
// everyone's. It returns errLockstepStop if any rank stopped (every rank
// then leaves), an error naming the ranks if the replicas' weights differ
// at the same step (on every rank alike), and nil to go on.
func (l *lockstep) round(step int64, code int, net *trainer.Network) error {
	size, rank := l.comm.Size(), l.comm.Rank()
	table := make([]float64, lsRowLen*size)
	row := table[rank*lsRowLen : (rank+1)*lsRowLen]
	row[lsStep], row[lsStop] = float64(step), float64(code)
	row[lsSum], row[lsSumSq], row[lsWeighted] = checksum(net)
	if err := l.comm.AllreduceSum(table); err != nil {
		l.left = true
		return fmt.Errorf("--distributed: lockstep round at step %d: %w", step, err)
	}
	stop, sameStep := false, true
	for q := range size {
		rec := table[q*lsRowLen : (q+1)*lsRowLen]
		switch int(rec[lsStop]) {
		case goOn, stopFinished:
		case stopInterrupted:
			l.interrupted = true
		default:
			if q != rank && l.failed < 0 {
				l.failed = q
			}
		}
		stop = stop || rec[lsStop] != goOn
		sameStep = sameStep && rec[lsStep] == table[lsStep]
	}
	if stop {
		l.left = true
	}
	if sameStep {
		for q := 1; q < size; q++ {
			rec := table[q*lsRowLen : (q+1)*lsRowLen]
			for _, f := range []int{lsSum, lsSumSq, lsWeighted} {
				if math.Float64bits(rec[f]) != math.Float64bits(table[f]) {
					l.left = true
					return fmt.Errorf("--distributed: the replicas diverged: at step %d rank %d's weights have checksum (Σw %.17g, Σw² %.17g, Σiw %.17g), rank 0's (%.17g, %.17g, %.17g); "+
						"replicated training needs every rank to compute bit-identical steps (same binary, flags, data and seed)",
						step, q, rec[lsSum], rec[lsSumSq], rec[lsWeighted], table[lsSum], table[lsSumSq], table[lsWeighted])
				}
			}
		}
	}
	if stop {
		return errLockstepStop
	}
	return nil
}

// checksum is a cheap fingerprint of the weights and buffers (BatchNorm
// running statistics): their sum, sum of squares and a position-weighted
// sum, which a permutation changes.
func checksum(net *trainer.Network) (sum, sumSq, weighted float64) {
	for _, v := range [][]float64{net.Params(), net.Buffers()} {
		for i, x := range v {
			sum += x
			sumSq += x * x
			weighted += float64(i%1021+1) * x
		}
	}
	return sum, sumSq, weighted
}

// report prints rank 0's summary.
func (r *rankRun) report(res trainer.Result, interrupted bool) {
	if r.rank != 0 {
		return
	}
	stats := r.mon.Stats()
	r.log.Info("distributed HVPs", "ranks", r.size, "probe_samples_per_rank", r.shard.Len(), "hvps", r.hvpStats.Applies,
		"local_seconds", r.hvpStats.Local.Seconds(), "allreduce_seconds", r.hvpStats.Reduce.Seconds(), "allreduce_share", r.hvpStats.ReduceShare())
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
