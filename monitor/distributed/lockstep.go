package distributed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
)

// Status is what a rank posts in a lockstep round.
type Status int

const (
	// Running: this rank goes on to the probe.
	Running Status = iota
	// Finished: this rank's loop is done.
	Finished
	// Interrupted: this rank was asked to stop (its context ended).
	Interrupted
	// Failed: this rank's loop failed.
	Failed
)

// noTimeout stands for "no monitor timer": the collective timeout replaces
// it (see MonitorConfig).
const noTimeout = 100 * 365 * 24 * time.Hour

// Options configure a Lockstep.
type Options struct {
	// Timeout caps each probe's wall time, on all ranks together: once any
	// rank is past it, every rank stops the probe at the same product, and
	// it is recorded as failure "timeout". 0 means no cap.
	Timeout time.Duration
}

// MonitorConfig turns the configuration of a single-process monitor into
// the one every rank must run, and the lockstep's Options. Probes become
// synchronous (an asynchronous probe would overlap the next lockstep
// round), and the monitor's own probe timer is switched off, because it
// would fire on one rank and not another; cfg's MaxDuration (or its
// default) becomes the collective Options.Timeout. A synchronous monitor
// keeps a deterministic schedule (Config.FullEvery, default every due step
// full, and the triggers, which see the same all-reduced values on every
// rank), so every rank plans the same kind of probe at the same step; the
// budget, measured on each rank's own clock, then only reports.
func MonitorConfig(cfg monitor.Config) (monitor.Config, Options, error) {
	// The monitor fills in its defaults; read the effective probe timeout.
	m, err := monitor.New("distributed", cfg)
	if err != nil {
		return monitor.Config{}, Options{}, err
	}
	opt := Options{Timeout: m.Config().MaxDuration}
	cfg.Async, cfg.MaxDuration = false, noTimeout
	return cfg, opt, nil
}

// Replica is this rank's copy of the model, as the protocol sees it.
type Replica interface {
	// Checksum fingerprints the parameters (and any state that must stay
	// identical across ranks, such as BatchNorm statistics); see Sum.
	Checksum() Checksum
	// Operator builds the Hessian of the mean loss over this rank's shard
	// of the probe batch, and returns the shard's sample count. It is
	// called only at a due probe, on every rank.
	Operator() (op hvp.Operator, samples int, err error)
}

// Lockstep is one rank's side of the protocol: it keeps the ranks'
// collective calls matched and the replicas' parameters identical. Every
// rank of the Comm holds one; its methods are collective unless said
// otherwise and must be called from one goroutine.
type Lockstep struct {
	comm    hvp.Comm
	timeout time.Duration
	now     func() time.Time // the probe timeout's clock; tests replace it

	left        bool
	interrupted bool
	failed      int
	stats       hvp.AllReduceStats
}

// NewLockstep returns this rank's lockstep over comm. It makes no
// collective call.
func NewLockstep(comm hvp.Comm, opt Options) (*Lockstep, error) {
	if comm == nil {
		return nil, errors.New("distributed: NewLockstep: nil Comm")
	}
	if opt.Timeout < 0 {
		return nil, fmt.Errorf("distributed: negative Timeout %v", opt.Timeout)
	}
	return &Lockstep{comm: comm, timeout: opt.Timeout, now: time.Now, failed: -1}, nil
}

// Left reports whether a round (or a probe) said stop: this rank then
// makes no more collective calls.
func (l *Lockstep) Left() bool { return l.left }

// Interrupted reports whether some rank was interrupted.
func (l *Lockstep) Interrupted() bool { return l.interrupted }

// FailedRank is the first other rank that reported Failed, or −1.
func (l *Lockstep) FailedRank() int { return l.failed }

// Stats are the cumulative all-reduce timings of this rank's probes.
func (l *Lockstep) Stats() hvp.AllReduceStats { return l.stats }

// errLeft is returned, without a collective call, by calls after the
// lockstep was left.
var errLeft = fmt.Errorf("%w: this rank has left the lockstep", ErrStopped)

// Round record, one row per rank.
const (
	rStep = iota
	rStatus
	rSum
	rSumSq
	rWeighted
	rowLen
)

// Round posts this rank's step, status and parameter checksum and reads
// every rank's. It returns an error wrapping ErrStopped if any rank's
// status is not Running (every rank then leaves), one wrapping ErrDiverged
// if two ranks at the same step have different checksums (every rank
// alike), and nil to go on.
func (l *Lockstep) Round(step int64, status Status, sum Checksum) error {
	if l.left {
		return errLeft
	}
	size, rank := l.comm.Size(), l.comm.Rank()
	table := make([]float64, rowLen*size)
	row := table[rank*rowLen : (rank+1)*rowLen]
	row[rStep], row[rStatus] = float64(step), float64(status)
	row[rSum], row[rSumSq], row[rWeighted] = sum.Sum, sum.SumSq, sum.Weighted
	if err := l.comm.AllreduceSum(table); err != nil {
		l.left = true
		return fmt.Errorf("distributed: lockstep round at step %d: %w", step, err)
	}
	stop, sameStep := false, true
	for q := range size {
		rec := table[q*rowLen : (q+1)*rowLen]
		switch Status(rec[rStatus]) {
		case Running, Finished:
		case Interrupted:
			l.interrupted = true
		default:
			if q != rank && l.failed < 0 {
				l.failed = q
			}
		}
		stop = stop || Status(rec[rStatus]) != Running
		sameStep = sameStep && rec[rStep] == table[rStep]
	}
	if stop {
		l.left = true
	}
	if sameStep {
		ref := Checksum{table[rSum], table[rSumSq], table[rWeighted]}
		for q := 1; q < size; q++ {
			rec := table[q*rowLen : (q+1)*rowLen]
			if c := (Checksum{rec[rSum], rec[rSumSq], rec[rWeighted]}); !c.equal(ref) {
				l.left = true
				return fmt.Errorf("%w: at step %d rank %d's parameters have checksum (Σw %.17g, Σw² %.17g, Σiw %.17g), rank 0's (%.17g, %.17g, %.17g); "+
					"replicated training needs every rank to compute bit-identical steps (same binary, flags, data and seed)",
					ErrDiverged, step, q, c.Sum, c.SumSq, c.Weighted, ref.Sum, ref.SumSq, ref.Weighted)
			}
		}
	}
	if stop {
		return fmt.Errorf("%w (round at step %d)", ErrStopped, step)
	}
	return nil
}

// Step is the per-step call of a replicated training loop. If a probe is
// due at info.Step (mon.Due), it runs a Round, posting Interrupted if ctx
// has ended, and then the collective Probe on rep's operator. It reports
// whether it probed. Errors are those of Round and Probe.
func (l *Lockstep) Step(ctx context.Context, mon *monitor.Monitor, info monitor.StepInfo, rep Replica) (snapshot.Snapshot, bool, error) {
	if !mon.Due(info.Step) {
		return snapshot.Snapshot{}, false, nil
	}
	plan, ok := mon.Plan(info.Step)
	if !ok || plan.Skip {
		return snapshot.Snapshot{}, false, nil
	}
	status := Running
	if ctx.Err() != nil {
		status = Interrupted
	}
	if err := l.Round(info.Step, status, rep.Checksum()); err != nil {
		return snapshot.Snapshot{}, false, err
	}
	s, err := l.probe(ctx, mon, info.Step, info, rep.Operator, plan)
	return s, true, err
}

// Probe runs mon.Probe at step on the Hessian of the whole probe batch:
// local builds this rank's part, which hvp.AllReduce combines (an error on
// one rank becomes a recorded failure on every rank). The probe does not
// run under ctx, since one rank alone must not skip a product the others
// wait for: before every product the ranks share whether ctx has ended on
// any of them or the probe is over Options.Timeout, and all stop at the
// same product.
//
// An interruption returns an error wrapping ErrStopped on every rank, and
// nothing is recorded; a failure of the process group returns its error.
// In both cases Left reports true. An error with Left false is this rank's
// sinks failing to record the snapshot; the lockstep goes on.
func (l *Lockstep) Probe(ctx context.Context, mon *monitor.Monitor, step int64, info monitor.StepInfo, local func() (hvp.Operator, int, error)) (snapshot.Snapshot, error) {
	return l.probe(ctx, mon, step, info, local, monitor.Plan{Kind: snapshot.KindFull, Reason: snapshot.ReasonScheduled})
}

// probe is Probe of the planned kind (Step's, from the monitor's
// deterministic schedule: light probes run in lockstep like full ones).
func (l *Lockstep) probe(ctx context.Context, mon *monitor.Monitor, step int64, info monitor.StepInfo, local func() (hvp.Operator, int, error), plan monitor.Plan) (snapshot.Snapshot, error) {
	if l.left {
		return snapshot.Snapshot{}, errLeft
	}
	op, n, localErr := local()
	if localErr != nil {
		op = nil // NewAllReduce then fails on every rank, not only here
	}
	if c, ok := op.(io.Closer); ok {
		defer c.Close()
	}
	// NewAllReduce is collective and fails on every rank if it fails on one.
	ar, err := hvp.NewAllReduce(l.comm, op, n)
	probeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var probed hvp.Operator
	var lop *lockstepOp
	if err != nil {
		dim := 1
		if op != nil {
			dim = op.Dim()
		}
		probed = failingOp{dim: dim, err: fmt.Errorf("building the HVP operator: %w", errors.Join(localErr, err))}
	} else {
		lop = &lockstepOp{l: l, ar: ar, ctx: ctx, cancel: cancel, loss: ar.Loss()}
		if math.IsNaN(lop.loss) { // some rank's operator reports no loss
			lop.loss = info.Loss
		}
		if l.timeout > 0 {
			lop.deadline = l.now().Add(l.timeout)
		}
		probed = lop
	}
	s, err := mon.ProbePlan(probeCtx, step, probed, info, plan)
	if lop != nil {
		st := ar.Stats()
		l.stats.Applies += st.Applies
		l.stats.Local += st.Local
		l.stats.Reduce += st.Reduce
		if lop.err != nil {
			return s, lop.err
		}
	}
	if l.left {
		return s, fmt.Errorf("%w: interrupted during the probe at step %d; nothing was recorded", ErrStopped, step)
	}
	return s, err
}

// failingOp turns an operator construction error into a recorded failure.
type failingOp struct {
	dim int
	err error
}

func (f failingOp) Dim() int                   { return f.dim }
func (f failingOp) Apply(_, _ []float64) error { return f.err }

// lockstepOp is the all-reduced Hessian with collective stops.
type lockstepOp struct {
	l        *Lockstep
	ar       *hvp.AllReduce
	ctx      context.Context // the run's: its end on any rank stops the probe
	cancel   func()          // cancels the probe's context
	deadline time.Time       // zero: none
	loss     float64         // the probe batch's mean loss
	err      error           // a failure of the process group
}

func (o *lockstepOp) Dim() int { return o.ar.Dim() }

// Loss is the mean loss over the whole probe batch, which the monitor
// records (StepInfo.Loss if the local operators report none).
func (o *lockstepOp) Loss() float64 { return o.loss }

func (o *lockstepOp) Apply(dst, v []float64) error {
	if o.err != nil {
		return o.err
	}
	var flags [2]float64 // interrupted, over time: counts of ranks
	if o.ctx.Err() != nil {
		flags[0] = 1
	}
	if !o.deadline.IsZero() && !o.l.now().Before(o.deadline) {
		flags[1] = 1
	}
	if err := o.l.comm.AllreduceSum(flags[:]); err != nil {
		o.l.left = true
		o.err = fmt.Errorf("distributed: probe flags: %w", err)
		o.cancel()
		return o.err
	}
	switch {
	case flags[0] > 0:
		o.l.left, o.l.interrupted = true, true
		o.cancel()
		return fmt.Errorf("probe stopped: interrupted on %g rank(s): %w", flags[0], context.Canceled)
	case flags[1] > 0:
		return fmt.Errorf("probe wall-time budget %v exceeded on %g rank(s): %w", o.l.timeout, flags[1], context.DeadlineExceeded)
	}
	return o.ar.Apply(dst, v)
}

// Finish ends this rank's part of a run whose loop returned runErr after
// step, its last completed step; sum is the checksum of its parameters
// then. A rank that stops between probes (finished, interrupted, failed)
// posts one last Round, which meets the other ranks' next probe round (or
// their own last round), so no rank is left waiting.
//
// It returns the run's outcome on this rank: nil with interrupted set if
// some rank was interrupted; runErr if this rank failed or the lockstep
// itself failed (ErrDiverged, a process-group error); an error wrapping
// ErrPeerFailed if another rank failed; and one wrapping ErrStopped if
// another rank finished before this one.
func (l *Lockstep) Finish(step int64, sum Checksum, runErr error) (interrupted bool, err error) {
	peerStop := errors.Is(runErr, ErrStopped)
	cancelled := !l.left && errors.Is(runErr, context.Canceled)
	var own error
	switch {
	case runErr == nil, peerStop, cancelled:
	case l.left:
		return false, runErr // the lockstep failed: every rank returns it
	default:
		own = runErr
	}
	if !l.left {
		status := Finished
		switch {
		case own != nil:
			status = Failed
		case cancelled:
			status = Interrupted
		}
		if err := l.Round(step, status, sum); err != nil && !errors.Is(err, ErrStopped) {
			return false, errors.Join(own, err)
		}
	}
	switch {
	case own != nil:
		return false, own
	case l.failed >= 0:
		return false, fmt.Errorf("%w: training stopped at step %d because rank %d failed (see its error)", ErrPeerFailed, step, l.failed)
	case peerStop && !l.interrupted:
		return false, fmt.Errorf("%w: training stopped at step %d because another rank finished early", ErrStopped, step)
	}
	return cancelled || peerStop, nil
}
