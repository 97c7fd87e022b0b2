// Package monitor probes the loss Hessian while a model trains, whatever
// the training loop.
//
// The monitor knows one thing about the model: an hvp.Operator handed to it
// when a probe is due. A loop calls Step after every optimiser step, with a
// function that builds the operator over a frozen copy of the parameters;
// the monitor decides when a probe is due, runs it (in the background with
// Config.Async), warm-starts it from the previous probe, adapts the interval
// to an overhead target, and hands every Snapshot to its sinks (a bbolt
// store, a Prometheus exporter). Close finishes or cancels the last probe.
//
// It never breaks the training loop: a probe that panics, produces NaN or
// Inf, or runs over its budget becomes a Snapshot with a failure reason.
// Adapters for particular model families (hessmon's trainer in
// trainer/hessian, GoMLX in its own module, central differences of any
// gradient in hvp.FiniteDiff) only build operators.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// StepInfo is what the training loop knows about one step.
type StepInfo struct {
	Step         int64 // 1-based count of optimiser steps
	Loss         float64
	LearningRate float64
	Optimizer    snapshot.Optimizer
	// Beta1 is Adam's β1, or SGD's heavy-ball momentum (0 without).
	Beta1 float64
	// Blocks partition the parameter vector for per-block (per-layer)
	// traces. Nil uses the operator's own Blocks() if it has that method,
	// else no blocks.
	Blocks []estimators.Block
	// Preconditioner is the diagonal of an adaptive optimiser's
	// preconditioner P at this step (Adam: (1−β1^t)(√(v̂_t)+ε)); with it a
	// probe adds λ1(P⁻¹H), the sharpness Adam's threshold refers to. Step
	// copies it only when a probe is due.
	Preconditioner []float64
}

// OperatorFunc builds the Hessian operator of a probe. Step calls it only
// when a probe is due, on the caller's goroutine, so it may read the live
// parameters; the operator it returns must not, because an asynchronous
// probe runs while training moves them on. It should therefore copy them
// (hvp.NewFiniteDiff does).
//
// The monitor uses these methods when the operator has them:
//
//	Loss() float64            the loss on the probe batch, recorded in the snapshot
//	Blocks() []estimators.Block  per-block traces, unless StepInfo.Blocks is set
//	SetWorkers(n int)         1 while training runs, 0 (all) once Close waits
//	Close() error             called when the probe is over
type OperatorFunc func() (hvp.Operator, error)

// Sink receives every snapshot, good or failed. The store and the
// Prometheus exporter are sinks.
type Sink interface {
	PutSnapshot(snapshot.Snapshot) error
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(snapshot.Snapshot) error

// PutSnapshot calls f(s).
func (f SinkFunc) PutSnapshot(s snapshot.Snapshot) error { return f(s) }

// TrainingObserver is a sink that also wants every step's loss and learning
// rate, so that dashboards show them between probes. The Prometheus
// exporter is one.
type TrainingObserver interface {
	ObserveTraining(run string, step int64, loss, lr float64)
}

// Flusher is a sink that buffers; Close flushes it.
type Flusher interface {
	Flush() error
}

// WarmStore persists the estimators' warm state so a resumed run starts
// warm. *store.Store implements it.
type WarmStore interface {
	PutWarm(run string, state []byte) error
	Warm(run string) ([]byte, error)
}

// ErrClosed is returned by Step after Close.
var ErrClosed = errors.New("monitor: closed")

// Monitor schedules and runs Hessian probes. Its methods are safe for
// concurrent use.
type Monitor struct {
	cfg   Config
	run   string
	sinks []Sink
	warmS WarmStore
	log   *slog.Logger
	// memLog logs the first probe a memory limit shrank.
	memLog sync.Once
	now    func() time.Time // the clock of the budget; tests replace it

	mu        sync.Mutex
	warm      *estimators.Warm // the full probes' warm state
	light     *LightWarm       // the light probes', kept apart
	every     int64
	lastProbe int64
	lastStep  time.Time // when the previous Step returned
	closed    bool
	inFlight  *flight   // the running asynchronous light probe, or nil
	fullRun   *flight   // the running asynchronous full probe, or nil
	queued    *flight   // the light probe waiting for inFlight to end, or nil
	finished  []*flight // ended flights whose cost the next Step settles
	sched     *scheduler
	fulls     int // full probes recorded (the cold-restart count)
	stats     Stats
	// warm-state persistence: the newest state not yet written, and when
	// and after how many probes the last write happened.
	unsaved      *estimators.Warm
	savedAt      time.Time
	savedProbes  int
	everSaved    bool
	warmSaveErrs int
	hist         history // the run's stored past (resume.go)
}

// flight is one asynchronous probe.
type flight struct {
	ctx    context.Context // the probe's own: Close cancels it
	cancel context.CancelFunc
	done   chan struct{}
	op     hvp.Operator
	kind   snapshot.Kind
	plan   Plan
	info   StepInfo
	cost   time.Duration // what it has cost training so far
	hvps   int           // the probe's, once it ended
}

// Stats counts what the monitor did.
type Stats struct {
	// Due counts due steps; each got a light or full probe or was
	// Skipped (its slot busy, or over budget). Probes = Light + Full,
	// and Measured counts the good ones (a λ1 with its residual).
	Due, Probes, Failures, Skipped int
	Light, Full, Measured          int
	// Triggered counts full probes a trigger brought forward.
	Triggered int
	HVPs      int
	// LightHVPs and FullHVPs split HVPs by kind.
	LightHVPs, FullHVPs int
	ProbeSeconds        float64
	// TrainSeconds is the training loop's wall time (probes on its
	// goroutine included) and OverheadSeconds what the probes cost it
	// (see Config.Budget);
	// Overhead is their ratio against the probe-free time.
	TrainSeconds, OverheadSeconds, Overhead float64
	// WarmWrites counts warm states written to the WarmStore.
	WarmWrites int
}

// Option configures a Monitor.
type Option func(*Monitor)

// WithSink adds a sink; sinks are called in order after every probe.
func WithSink(s Sink) Option { return func(m *Monitor) { m.sinks = append(m.sinks, s) } }

// WithWarmStore persists warm state across restarts of the same run.
func WithWarmStore(w WarmStore) Option { return func(m *Monitor) { m.warmS = w } }

// Store is a sink that also keeps the warm state, as *store.Store does.
type Store interface {
	Sink
	WarmStore
}

// WithStore wires s as both a sink and the warm store: one option for a
// store, so a resumed run starts warm from where it stopped.
func WithStore(s Store) Option {
	return func(m *Monitor) {
		m.sinks = append(m.sinks, s)
		m.warmS = s
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Monitor) { m.log = l } }

// New returns a monitor for run. With a warm store holding state for run
// (a resumed run), the first probe starts warm.
func New(run string, cfg Config, opts ...Option) (*Monitor, error) {
	if run == "" {
		return nil, errors.New("monitor: run id is empty")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Monitor{cfg: cfg, run: run, every: cfg.Every, log: slog.Default(), now: time.Now, sched: newScheduler(cfg)}
	for _, o := range opts {
		o(m)
	}
	if err := m.learnHistory(); err != nil {
		return nil, err
	}
	if m.warmS != nil {
		b, err := m.warmS.Warm(run)
		if err != nil {
			return nil, fmt.Errorf("monitor: loading warm state: %w", err)
		}
		if len(b) > 0 {
			w := new(estimators.Warm)
			if err := w.UnmarshalBinary(b); err != nil {
				m.log.Warn("ignoring unreadable warm state; the first probe starts cold", "run", run, "err", err)
			} else {
				m.warm = w
			}
		}
	}
	return m, nil
}

// Run is the run id.
func (m *Monitor) Run() string { return m.run }

// Config returns the effective configuration (defaults filled in).
func (m *Monitor) Config() Config { return m.cfg }

// Interval is the probe interval (Config.Every): the budget decides the
// kind of probe at each due step, not the interval.
func (m *Monitor) Interval() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.every
}

// Stats returns counters since New.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.stats
	st.TrainSeconds = m.sched.train.Seconds()
	st.OverheadSeconds = max(0, (m.sched.spent + m.sched.extra).Seconds())
	st.Overhead = m.sched.overhead()
	return st
}

// Due reports whether a probe is due at step.
func (m *Monitor) Due(step int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dueLocked(step)
}

func (m *Monitor) dueLocked(step int64) bool { return step > 0 && step-m.lastProbe >= m.every }

// Step tells the monitor that the loop finished info.Step, and probes the
// Hessian when a probe is due, building the operator with newOp. Between
// probes it only records the step (training observers see its loss and
// learning rate) and the time since the previous Step, which the budget
// counts as training time.
//
// At a due step the scheduler picks a light or full probe (see
// Config.Budget, Config.FullEvery and the triggers), or skips the step.
// Synchronously, Step returns when the probe is recorded; with
// Config.Async it returns once the probe has started. Step returns an
// error only when ctx is done, the monitor is closed, or a sink failed to
// record a synchronous probe; probe failures are snapshots, not errors, so
// a loop may log Step's error and go on.
func (m *Monitor) Step(ctx context.Context, info StepInfo, newOp OperatorFunc) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	m.settleLocked(now)
	if err := m.checkHistoryLocked(info.Step); err != nil {
		m.mu.Unlock()
		return err
	}
	plan, f, due := m.planLocked(ctx, info.Step)
	m.mu.Unlock()

	for _, s := range m.sinks {
		if o, ok := s.(TrainingObserver); ok {
			o.ObserveTraining(m.run, info.Step, info.Loss, info.LearningRate)
		}
	}
	if !due || plan.Skip {
		return nil
	}
	start := m.now()
	op := m.operator(info.Step, newOp)
	var err error
	var hvps int
	if f == nil {
		var s snapshot.Snapshot
		s, err = m.probePlanned(ctx, info.Step, op, info, plan)
		hvps = s.HVPs
		closeOperator(op, m.log)
	} else {
		m.mu.Lock()
		f.op, f.info = op, info
		start := m.inFlight == f || m.fullRun == f
		if m.queued == f && m.inFlight == nil { // its predecessor ended meanwhile
			m.queued, m.inFlight, start = nil, f, true
		}
		m.mu.Unlock()
		if start {
			m.launch(f)
		}
	}
	m.mu.Lock()
	end := m.now()
	// The caller's share of the probe (building the operator, or all of a
	// synchronous probe) is its cost, and no training time.
	m.sched.chargeCaller(end.Sub(start), plan)
	if f != nil {
		f.cost += end.Sub(start)
	} else {
		m.sched.measured(plan.Kind, end.Sub(start), hvps)
	}
	m.lastStep = end
	m.mu.Unlock()
	return err
}

// settleLocked counts the step that ended at now as training time, charges
// its excess over a probe-free step to the asynchronous probes that ran
// during it, and closes the accounts of those that have ended.
func (m *Monitor) settleLocked(now time.Time) {
	if !m.lastStep.IsZero() {
		var running []*flight
		for _, f := range []*flight{m.fullRun, m.inFlight} {
			if f != nil {
				running = append(running, f)
			}
		}
		running = append(running, m.finished...)
		ex := m.sched.observeStep(now.Sub(m.lastStep), len(running) > 0)
		for _, f := range running {
			share := ex / time.Duration(len(running))
			f.cost += share
			m.sched.charge(share, f.plan)
		}
	}
	for _, f := range m.finished {
		m.sched.measured(f.kind, f.cost, f.hvps)
	}
	m.finished = m.finished[:0]
	m.lastStep = now
}

// planLocked decides what step gets; due is false when no probe is due.
// An asynchronous probe gets its flight, reserved now so that a
// concurrent Close waits for it.
func (m *Monitor) planLocked(ctx context.Context, step int64) (plan Plan, f *flight, due bool) {
	if !m.dueLocked(step) {
		return Plan{}, nil, false
	}
	m.lastProbe = step
	m.stats.Due++
	free := slots{light: true, full: true}
	if m.cfg.Async {
		// A light probe may wait behind the running one (its operator,
		// over its own frozen copy, is built now).
		free = slots{light: m.inFlight == nil || m.queued == nil, full: m.fullRun == nil}
	}
	plan = m.sched.decide(free)
	if plan.Skip {
		m.stats.Skipped++
		return plan, nil, true
	}
	if !m.cfg.Async {
		return plan, nil, true
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f = &flight{done: make(chan struct{}), ctx: pctx, cancel: cancel, kind: plan.Kind, plan: plan}
	switch {
	case plan.Kind == snapshot.KindFull:
		m.fullRun = f
	case m.inFlight == nil:
		m.inFlight = f
	default:
		m.queued = f
	}
	return plan, f, true
}

// launch runs flight f in a goroutine, then the light probes queued
// behind it.
func (m *Monitor) launch(f *flight) {
	go func() {
		lowerPriority(m.cfg.probeNice)
		for f != nil {
			f = m.fly(f)
		}
	}()
}

// fly runs and records flight f, frees its slot, and returns the queued
// light flight that takes the slot over (nil: none).
func (m *Monitor) fly(f *flight) (next *flight) {
	defer close(f.done)
	defer f.cancel()
	m.mu.Lock()
	if m.closed {
		setWorkers(f.op, 0) // Close is already waiting: use every core
	} else {
		setWorkers(f.op, 1) // one core while training runs
	}
	m.mu.Unlock()
	s, err := m.probePlanned(f.ctx, f.info.Step, f.op, f.info, f.plan)
	if err != nil && !errors.Is(err, context.Canceled) {
		m.log.Error("recording probe", "run", m.run, "step", f.info.Step, "err", err)
	}
	closeOperator(f.op, m.log)
	m.mu.Lock()
	defer m.mu.Unlock()
	f.hvps = s.HVPs
	if m.fullRun == f {
		m.fullRun = nil
	}
	if m.inFlight == f {
		m.inFlight = nil
		if q := m.queued; q != nil && q.op != nil {
			m.queued, m.inFlight, next = nil, q, q
		}
	}
	m.finished = append(m.finished, f)
	return next
}

// operator calls newOp, turning an error or a panic into an operator whose
// products fail, so that the failure is recorded as a snapshot.
func (m *Monitor) operator(step int64, newOp OperatorFunc) (op hvp.Operator) {
	defer func() {
		if r := recover(); r != nil {
			op = failingOperator{err: fmt.Errorf("building the HVP operator panicked: %v", r)}
		}
	}()
	if newOp == nil {
		return failingOperator{err: errors.New("no operator function")}
	}
	op, err := newOp()
	if err != nil {
		return failingOperator{err: fmt.Errorf("building the HVP operator at step %d: %w", step, err)}
	}
	if op == nil {
		return failingOperator{err: fmt.Errorf("the operator function returned nil at step %d", step)}
	}
	return op
}

// Close ends the monitor: it waits for the in-flight asynchronous probes,
// handing them every core (the operator's SetWorkers(0)), writes the newest
// warm state and flushes the sinks. When ctx ends first, the probes are
// cancelled (they stop within one HVP and are not recorded) and Close
// returns ctx's error after they have stopped. Later Steps return
// ErrClosed; a second Close returns nil.
func (m *Monitor) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var flights []*flight
	for _, f := range []*flight{m.fullRun, m.inFlight, m.queued} {
		if f != nil {
			flights = append(flights, f)
			if f.op != nil {
				setWorkers(f.op, 0)
			}
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, f := range flights {
		select {
		case <-f.done:
		case <-ctx.Done():
			f.cancel()
			<-f.done
			errs = append(errs, fmt.Errorf("monitor: in-flight probe cancelled: %w", ctx.Err()))
		}
	}
	if err := m.saveWarm(true); err != nil {
		errs = append(errs, err)
	}
	for _, s := range m.sinks {
		if fl, ok := s.(Flusher); ok {
			if err := fl.Flush(); err != nil {
				errs = append(errs, fmt.Errorf("monitor: flushing a sink: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Probe runs a full probe on op at step now, whatever the schedule, and
// returns the snapshot, which has also been handed to every sink. It is
// the synchronous primitive under Step, for callers that schedule probes
// themselves (tests, and ProbePlan for the distributed protocol). Probe
// never panics and returns an error only when ctx ends (the half-done
// probe is then not recorded) or a sink fails; estimator failures are
// recorded in the snapshot.
func (m *Monitor) Probe(ctx context.Context, step int64, op hvp.Operator, info StepInfo) (snapshot.Snapshot, error) {
	return m.probePlanned(ctx, step, op, info, Plan{Kind: snapshot.KindFull, Reason: snapshot.ReasonScheduled})
}

// ProbePlan runs the probe plan asks for (as Plan returned it) on op at
// step, as Probe does.
func (m *Monitor) ProbePlan(ctx context.Context, step int64, op hvp.Operator, info StepInfo, plan Plan) (snapshot.Snapshot, error) {
	if plan.Skip {
		return snapshot.Snapshot{}, errors.New("monitor: ProbePlan of a skipped step")
	}
	return m.probePlanned(ctx, step, op, info, plan)
}

// Plan takes the scheduler's decision for a due step at step without
// probing, for callers that run the probe themselves with ProbePlan (the
// distributed lockstep: every rank's monitor, fed the same steps and
// values, decides the same in a synchronous run). ok is false when no
// probe is due.
func (m *Monitor) Plan(step int64) (plan Plan, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg.Async {
		return Plan{}, false
	}
	plan, _, ok = m.planLocked(context.Background(), step)
	return plan, ok
}

// probePlanned runs and records one probe of plan's kind.
func (m *Monitor) probePlanned(ctx context.Context, step int64, op hvp.Operator, info StepInfo, plan Plan) (snapshot.Snapshot, error) {
	m.mu.Lock()
	m.lastProbe = max(m.lastProbe, step)
	o := probeOptions{plan: plan, warm: m.warm, light: m.light}
	if plan.Kind == snapshot.KindFull {
		o.cold = !m.cfg.NoColdRestarts && m.fulls > 0 && m.fulls%m.cfg.ColdEvery == 0
		o.blockEigen = m.cfg.BlockEigenEvery > 0 && m.fulls%m.cfg.BlockEigenEvery == 0
	}
	m.mu.Unlock()

	o.blocks = info.Blocks
	if o.blocks == nil {
		if b, ok := op.(interface{ Blocks() []estimators.Block }); ok {
			o.blocks = b.Blocks()
		}
	}
	if l, ok := op.(interface{ Loss() float64 }); ok {
		info.Loss = l.Loss()
	}
	start := m.now()
	s, out := m.probe(ctx, step, op, info, o)
	elapsed := m.now().Sub(start)
	s.Seconds = elapsed.Seconds()
	if p, ok := op.(interface{ Precision() snapshot.Precision }); ok {
		s.Precision = p.Precision() // float32 operators say so; empty means float64
	}
	if err := ctx.Err(); err != nil && s.Failure != "" {
		// The caller stopped (e.g. SIGINT or Close): that is no probe
		// failure, and a half-done probe is not recorded.
		return s, fmt.Errorf("monitor: probe at step %d: %w", step, err)
	}
	m.record(&s, out)
	return s, m.emit(s)
}

// record updates the warm states, the triggers and the counters with the
// finished probe s.
func (m *Monitor) record(s *snapshot.Snapshot, out probeOutput) {
	m.mu.Lock()
	defer m.mu.Unlock()
	good := s.Failure == ""
	if s.Kind == snapshot.KindFull {
		m.fulls++
		m.stats.Full++
		m.stats.FullHVPs += s.HVPs
		if good && out.warm != nil {
			m.warm = out.warm
			m.unsaved = out.warm
			m.light = seedLight(m.light, out.warm)
		}
		if s.Reason.Trigger() {
			m.stats.Triggered++
		}
		m.sched.trig.full(s)
	} else {
		m.stats.Light++
		m.stats.LightHVPs += s.HVPs
		if good && out.light != nil {
			m.light = out.light
		}
		m.sched.trig.light(s)
	}
	if _, ok := s.Lambda1(); ok && good {
		m.stats.Measured++
	}
	m.stats.Probes++
	m.stats.HVPs += s.HVPs
	m.stats.ProbeSeconds += s.Seconds
	if !good {
		m.stats.Failures++
	}
}

// emit logs s and hands it to the sinks, then writes the warm state when
// it is due.
func (m *Monitor) emit(s snapshot.Snapshot) error {
	if s.Failure != "" {
		m.log.Warn("probe failed", "run", m.run, "step", s.Step, "kind", s.Kind, "reason", s.Failure, "detail", s.Detail)
	} else {
		m.log.Debug("probe", "run", m.run, "step", s.Step, "kind", s.Kind, "why", s.Reason, "hvps", s.HVPs, "seconds", s.Seconds, "warm", s.Warm)
	}
	var errs []error
	for _, sink := range m.sinks {
		if err := sink.PutSnapshot(s); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Kind == snapshot.KindFull {
		if err := m.saveWarm(false); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("monitor: step %d: %w", s.Step, err)
	}
	return nil
}

// saveWarm writes the newest unsaved warm state when the write rate allows
// it, or always with force.
func (m *Monitor) saveWarm(force bool) error {
	if m.warmS == nil {
		return nil
	}
	m.mu.Lock()
	w := m.unsaved
	m.savedProbes++
	due := w != nil && (force || !m.everSaved || m.savedProbes >= m.cfg.WarmEvery || time.Since(m.savedAt) >= m.cfg.WarmInterval)
	if due {
		m.unsaved = nil
		m.savedProbes = 0
		m.savedAt = time.Now()
		m.everSaved = true
	}
	m.mu.Unlock()
	if !due {
		return nil
	}
	b, err := w.MarshalBinary()
	if err != nil {
		return fmt.Errorf("encoding warm state: %w", err)
	}
	if err := m.warmS.PutWarm(m.run, b); err != nil {
		return fmt.Errorf("saving warm state: %w", err)
	}
	m.mu.Lock()
	m.stats.WarmWrites++
	m.mu.Unlock()
	return nil
}

// probeOptions say what one probe runs with.
type probeOptions struct {
	plan   Plan
	blocks []estimators.Block
	warm   *estimators.Warm // the full probe's
	light  *LightWarm
	// cold ignores the full probe's eigen warm state (the periodic cold
	// restart); blockEigen adds the block λ1s.
	cold, blockEigen bool
}

// probeOutput is a probe's next warm state, of its kind.
type probeOutput struct {
	warm  *estimators.Warm
	light *LightWarm
}

// probe runs the pipeline of the planned kind with panic, NaN, budget and
// time isolation.
func (m *Monitor) probe(ctx context.Context, step int64, op hvp.Operator, info StepInfo, o probeOptions) (s snapshot.Snapshot, out probeOutput) {
	s = snapshot.Snapshot{
		Run: m.run, Step: step, Time: time.Now().UTC(),
		Loss: info.Loss, LearningRate: info.LearningRate, Optimizer: info.Optimizer, Beta1: info.Beta1,
		Kind: o.plan.Kind, Reason: o.plan.Reason,
	}
	counted := &hvp.Counting{Op: guard{op}}
	defer func() {
		if r := recover(); r != nil {
			s.Failure = snapshot.FailPanic
			s.Detail = fmt.Sprintf("%v\n%s", r, debug.Stack())
			s.HVPs = counted.Count()
			out = probeOutput{}
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.MaxDuration)
	defer cancel()
	in := Inputs{Blocks: o.blocks, Warm: o.warm, Cold: o.cold, BlockEigen: o.blockEigen}
	if info.Optimizer.Adaptive() {
		in.Preconditioner = info.Preconditioner
	}
	var err error
	if o.plan.Kind == snapshot.KindLight {
		in.Warm = nil
		out.light, _, err = AnalyzeLight(ctx, &s, counted, m.cfg, in, o.light)
	} else {
		s.Warm = o.warm != nil
		out.warm, _, err = Analyze(ctx, &s, counted, m.cfg, in)
	}
	s.HVPs = counted.Count()
	note := s.Detail // a memory note of Analyze's (see Config.MaxProbeBytes)
	if note != "" {
		m.memLog.Do(func() { m.log.Warn("probe shrunk to fit its memory limit", "run", m.run, "step", step, "detail", note) })
	}
	s.Failure, s.Detail = classify(err)
	if s.Failure == "" && !finiteSnapshot(&s) {
		s.Failure, s.Detail = snapshot.FailNaN, "an estimate is NaN or infinite"
	}
	s.Detail = joinNote(s.Detail, note)
	if s.Failure != "" {
		out = probeOutput{}
	}
	setSharpness(&s)
	return s, out
}

// classify maps a pipeline error to a failure reason.
func classify(err error) (snapshot.Failure, string) {
	switch {
	case err == nil:
		return "", ""
	case errors.Is(err, context.DeadlineExceeded):
		return snapshot.FailTimeout, err.Error()
	case errors.Is(err, context.Canceled):
		return snapshot.FailTimeout, "cancelled: " + err.Error()
	case errors.Is(err, hvp.ErrNonFinite), errors.Is(err, estimators.ErrNonFinite):
		return snapshot.FailNaN, err.Error()
	case errors.Is(err, ErrBudget), errors.Is(err, estimators.ErrNotConverged):
		return snapshot.FailBudget, err.Error()
	default:
		return snapshot.FailError, err.Error()
	}
}

// SharpnessThreshold is the edge-of-stability level for λ1 (Cohen et al.
// 2021): 2/η for gradient descent, (2+2β)/η with heavy-ball momentum β, and
// (2+2β1)/(η(1−β1)) for Adam (38/η at β1 = 0.9). An unknown optimiser has
// no threshold (0).
func SharpnessThreshold(optimizer snapshot.Optimizer, lr, beta1 float64) float64 {
	if lr <= 0 {
		return 0
	}
	switch {
	case optimizer.Adaptive():
		if beta1 <= 0 || beta1 >= 1 {
			beta1 = 0.9
		}
		return (2 + 2*beta1) / (lr * (1 - beta1))
	case optimizer == snapshot.SGD || optimizer == "":
		return (2 + 2*beta1) / lr
	default:
		return 0
	}
}

// setSharpness sets the threshold and the ratio of the sharpness it refers
// to: λ1(P⁻¹H) for an adaptive optimiser (when probed), λ1 otherwise.
func setSharpness(s *snapshot.Snapshot) {
	s.SharpnessThreshold = SharpnessThreshold(s.Optimizer, s.LearningRate, s.Beta1)
	if l, ok := s.SharpnessLambda(); ok && s.SharpnessThreshold > 0 {
		s.SharpnessRatio = l / s.SharpnessThreshold
	}
}

func finite(xs ...float64) bool {
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

func finiteSnapshot(s *snapshot.Snapshot) bool {
	if !finite(s.Eigenvalues...) || !finite(s.Residuals...) {
		return false
	}
	if p := s.LambdaMin; p != nil && !finite(p.Value, p.Residual) {
		return false
	}
	if s.Trace != nil && !finite(s.Trace.Value, s.Trace.StdErr) {
		return false
	}
	if s.ESD != nil && (!finite(s.ESD.Nodes...) || !finite(s.ESD.Weights...)) {
		return false
	}
	return true
}

// guard turns a non-finite product into hvp.ErrNonFinite, so that a
// diverging model is reported as such rather than as whatever an estimator
// makes of NaN.
type guard struct{ op hvp.Operator }

func (g guard) Dim() int { return g.op.Dim() }

func (g guard) Apply(dst, v []float64) error {
	if err := g.op.Apply(dst, v); err != nil {
		return err
	}
	if !finite(dst...) {
		return hvp.ErrNonFinite
	}
	return nil
}

// failingOperator turns a construction error into a recorded probe failure.
type failingOperator struct{ err error }

func (f failingOperator) Dim() int                   { return 1 }
func (f failingOperator) Apply(_, _ []float64) error { return f.err }

func setWorkers(op hvp.Operator, n int) {
	if w, ok := op.(interface{ SetWorkers(int) }); ok {
		w.SetWorkers(n)
	}
}

func closeOperator(op hvp.Operator, log *slog.Logger) {
	if c, ok := op.(io.Closer); ok {
		if err := c.Close(); err != nil {
			log.Warn("closing the HVP operator", "err", err)
		}
	}
}
