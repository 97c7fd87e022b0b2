// Package monitor probes the loss Hessian while a model trains.
//
// A Monitor decides when a probe is due, runs the estimators on an
// hvp.Operator warm-started from the previous probe, and hands every
// Snapshot to its sinks (a bbolt store, a Prometheus exporter). It never
// breaks the training loop: a probe that panics, produces NaN or Inf, or
// runs over its budget becomes a Snapshot with a failure reason.
//
// It works with any loop: call Due and Probe yourself with an operator such
// as hvp.FiniteDiff, or attach Hook to a trainer loop.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// Config says what a probe computes and when.
type Config struct {
	// Every is the probe interval in steps (default 50). A probe is due at
	// every multiple of Every, step 0 excluded.
	Every int64
	// TopK eigenvalues (default 5; negative disables), in Order.
	TopK  int
	Order estimators.Order
	// EigenTol is the eigen residual tolerance relative to ‖H‖ (default 1e-4).
	EigenTol float64
	// NoTrace and NoESD switch those estimators off.
	NoTrace bool
	NoESD   bool
	// TraceRelTol is the target relative standard error (default 0.05).
	TraceRelTol float64
	// TraceMaxHVPs caps the trace's products in one probe (default 40;
	// negative: only MaxHVPs caps them). Late in training the trace shrinks
	// while its per-probe variance, set by the spectrum's bulk, does not,
	// and 5% would take 100+ products; a capped trace reports its
	// larger standard error instead, and the monitor's cost stays flat.
	TraceMaxHVPs int
	// ESDProbes × ESDSteps Lanczos steps for the spectral density
	// (defaults 1 × 30).
	ESDProbes, ESDSteps int
	// MaxHVPs caps the Hessian-vector products of one probe (default 400);
	// a probe that needs more is recorded as failure "budget" with the
	// estimates it reached.
	MaxHVPs int
	// MaxDuration caps one probe's wall time (default 2 minutes); past it
	// the probe is cancelled and recorded as failure "timeout".
	MaxDuration time.Duration
	// Async probes a frozen copy of the parameters in a goroutine while
	// training continues; at most one probe is in flight, and a probe that
	// falls due while another runs is skipped. On Linux the probe's thread
	// runs at nice 19, so on a machine with more runnable threads than cores
	// the probe waits, not the training (measured with a CPU hog on one of
	// two cores: loop 1.37× plain at normal priority, 0.99× at nice 19, with
	// fewer probes finished).
	Async bool
	// OverheadTarget, when > 0, adapts the interval so that probing takes
	// at most this fraction of training time (e.g. 0.05 for 5%).
	OverheadTarget float64
	// ColdEvery forces a cold eigen solve every so many probes (default
	// 10; negative: never), so that an eigenvalue that rises into the top k
	// along a direction the warm start does not see is not missed.
	ColdEvery int
	// KeepVectors stores the eigenvectors in each snapshot (large).
	KeepVectors bool
	// Seed seeds every random probe vector.
	Seed uint64
}

func (c Config) withDefaults() Config {
	if c.Every <= 0 {
		c.Every = 50
	}
	if c.TopK == 0 {
		c.TopK = 5
	}
	if c.EigenTol <= 0 {
		c.EigenTol = 1e-4
	}
	if c.TraceRelTol <= 0 {
		c.TraceRelTol = 0.05
	}
	if c.TraceMaxHVPs == 0 {
		c.TraceMaxHVPs = 40
	}
	if c.ESDProbes <= 0 {
		c.ESDProbes = 1
	}
	if c.ESDSteps <= 0 {
		c.ESDSteps = 30
	}
	if c.MaxHVPs <= 0 {
		c.MaxHVPs = 400
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = 2 * time.Minute
	}
	if c.ColdEvery == 0 {
		c.ColdEvery = 10
	}
	return c
}

// Meta is what the training loop knows about the step being probed.
type Meta struct {
	Loss         float64
	LearningRate float64
	Optimizer    string // "sgd" or "adam"
	Beta1        float64
	// Blocks partition the parameter vector (one per tensor) for per-layer
	// traces; nil skips them.
	Blocks []estimators.Block
}

// Sink receives every snapshot, good or failed. The store and the
// Prometheus exporter are sinks.
type Sink interface {
	PutSnapshot(snapshot.Snapshot) error
}

// WarmStore persists the estimators' warm state so a resumed run starts
// warm. *store.Store implements it.
type WarmStore interface {
	PutWarm(run string, state []byte) error
	Warm(run string) ([]byte, error)
}

// Failure reasons recorded in Snapshot.Failure.
const (
	FailNaN     = "nan"
	FailPanic   = "panic"
	FailTimeout = "timeout"
	FailBudget  = "budget"
	FailError   = "error"
	FailSkipped = "skipped"
)

// Monitor schedules and runs Hessian probes. Its methods are safe for
// concurrent use.
type Monitor struct {
	cfg   Config
	run   string
	sinks []Sink
	warmS WarmStore
	log   *slog.Logger

	mu        sync.Mutex
	warm      *estimators.Warm
	every     int64
	lastProbe int64
	inFlight  bool
	draining  bool      // Wait is waiting: the in-flight probe may use every core
	tailOp    *hvp.Mean // the in-flight asynchronous probe's chunked operator
	wg        sync.WaitGroup
	probeTime time.Duration // total probe wall time
	trainTime time.Duration // training time seen through Observe
	stats     Stats
}

// Stats counts what the monitor did.
type Stats struct {
	Probes, Failures, Skipped int
	HVPs                      int
	ProbeSeconds              float64
}

// Option configures a Monitor.
type Option func(*Monitor)

// WithSink adds a sink; sinks are called in order after every probe.
func WithSink(s Sink) Option { return func(m *Monitor) { m.sinks = append(m.sinks, s) } }

// WithWarmStore persists warm state across restarts of the same run.
func WithWarmStore(w WarmStore) Option { return func(m *Monitor) { m.warmS = w } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Monitor) { m.log = l } }

// New returns a monitor for run. With a warm store holding state for run
// (a resumed run), the first probe starts warm.
func New(run string, cfg Config, opts ...Option) (*Monitor, error) {
	if run == "" {
		return nil, errors.New("monitor: run id is empty")
	}
	cfg = cfg.withDefaults()
	if cfg.OverheadTarget < 0 || cfg.OverheadTarget >= 1 {
		return nil, fmt.Errorf("monitor: overhead target %g must be in [0, 1)", cfg.OverheadTarget)
	}
	m := &Monitor{cfg: cfg, run: run, every: cfg.Every, log: slog.Default()}
	for _, o := range opts {
		o(m)
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

// Interval is the current probe interval; it changes only with an
// overhead target.
func (m *Monitor) Interval() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.every
}

// Stats returns counters since New.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stats
}

// Due reports whether a probe is due at step.
func (m *Monitor) Due(step int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return step > 0 && step-m.lastProbe >= m.every
}

// ObserveTraining tells the monitor how long training took between calls,
// for the overhead target.
func (m *Monitor) ObserveTraining(d time.Duration) {
	m.mu.Lock()
	m.trainTime += d
	m.mu.Unlock()
}

// Probe runs the configured estimators on op at step and returns the
// snapshot, which has also been handed to every sink. Probe never panics and
// returns an error only when a sink fails; estimator failures are recorded
// in the snapshot.
func (m *Monitor) Probe(ctx context.Context, step int64, op hvp.Operator, meta Meta) (snapshot.Snapshot, error) {
	m.mu.Lock()
	m.lastProbe = step
	warm := m.warm
	cold := m.cfg.ColdEvery > 0 && m.stats.Probes > 0 && m.stats.Probes%m.cfg.ColdEvery == 0
	m.mu.Unlock()

	start := time.Now()
	s, newWarm := m.probe(ctx, step, op, meta, warm, cold)
	s.Seconds = time.Since(start).Seconds()
	if err := ctx.Err(); err != nil && s.Failure != "" {
		// The caller stopped (e.g. SIGINT): that is no probe failure, and
		// a half-done probe is not recorded.
		return s, fmt.Errorf("monitor: probe at step %d: %w", step, err)
	}

	m.mu.Lock()
	if s.Failure == "" && newWarm != nil {
		m.warm = newWarm
	}
	m.stats.Probes++
	m.stats.HVPs += s.HVPs
	m.stats.ProbeSeconds += s.Seconds
	if s.Failure != "" {
		m.stats.Failures++
	}
	m.probeTime += time.Since(start)
	m.adaptLocked()
	persist := m.warmS != nil && s.Failure == "" && newWarm != nil
	m.mu.Unlock()

	if s.Failure != "" {
		m.log.Warn("probe failed", "run", m.run, "step", step, "reason", s.Failure, "detail", s.Detail)
	} else {
		m.log.Debug("probe", "run", m.run, "step", step, "hvps", s.HVPs, "seconds", s.Seconds, "warm", s.Warm)
	}
	var errs []error
	for _, sink := range m.sinks {
		if err := sink.PutSnapshot(s); err != nil {
			errs = append(errs, err)
		}
	}
	if persist {
		if b, err := newWarm.MarshalBinary(); err != nil {
			errs = append(errs, fmt.Errorf("encoding warm state: %w", err))
		} else if err := m.warmS.PutWarm(m.run, b); err != nil {
			errs = append(errs, fmt.Errorf("saving warm state: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("monitor: step %d: %w", step, err)
	}
	return s, nil
}

// adaptLocked stretches or shrinks the interval to hold the overhead
// target: the interval scales with (probe time share)/(target), within
// [Every/4, 64·Every].
func (m *Monitor) adaptLocked() {
	if m.cfg.OverheadTarget <= 0 || m.trainTime <= 0 || m.stats.Probes < 1 {
		return
	}
	share := m.probeTime.Seconds() / m.trainTime.Seconds()
	next := float64(m.every) * share / m.cfg.OverheadTarget
	lo, hi := float64(max(1, m.cfg.Every/4)), float64(64*m.cfg.Every)
	next = math.Min(hi, math.Max(lo, next))
	// Move at most a factor 2 per probe to avoid oscillation.
	next = math.Min(2*float64(m.every), math.Max(float64(m.every)/2, next))
	m.every = int64(math.Round(next))
}

// probe runs the estimators with panic and budget isolation.
func (m *Monitor) probe(ctx context.Context, step int64, op hvp.Operator, meta Meta, warm *estimators.Warm, cold bool) (s snapshot.Snapshot, newWarm *estimators.Warm) {
	s = snapshot.Snapshot{
		Run: m.run, Step: step, Time: time.Now().UTC(),
		Loss: meta.Loss, LearningRate: meta.LearningRate, Optimizer: meta.Optimizer, Beta1: meta.Beta1,
		Warm: warm != nil,
	}
	defer func() {
		if r := recover(); r != nil {
			s.Failure = FailPanic
			s.Detail = fmt.Sprintf("%v\n%s", r, debug.Stack())
			newWarm = nil
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.MaxDuration)
	defer cancel()
	counted := &hvp.Counting{Op: guard{op}}
	newWarm, err := runEstimators(ctx, &s, counted, m.cfg, meta, warm, cold)
	s.HVPs = counted.Count()
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		s.Failure, s.Detail = FailTimeout, err.Error()
	case errors.Is(err, context.Canceled):
		s.Failure, s.Detail = FailTimeout, "cancelled: "+err.Error()
	case errors.Is(err, errNonFinite):
		s.Failure, s.Detail = FailNaN, err.Error()
	case errors.Is(err, errBudget) || errors.Is(err, estimators.ErrNotConverged):
		s.Failure, s.Detail = FailBudget, err.Error()
	default:
		s.Failure, s.Detail = FailError, err.Error()
	}
	if s.Failure == "" && !finiteSnapshot(&s) {
		s.Failure, s.Detail = FailNaN, "an estimate is NaN or infinite"
	}
	if s.Failure != "" {
		newWarm = nil
	}
	setSharpness(&s)
	return s, newWarm
}

// SharpnessThreshold is the edge-of-stability level for λ1 (Cohen et al.
// 2021): 2/η for gradient descent, (2+2β)/η with heavy-ball momentum β, and
// (2+2β1)/(η(1−β1)) for Adam (38/η at β1 = 0.9).
func SharpnessThreshold(optimizer string, lr, beta1 float64) float64 {
	if lr <= 0 {
		return 0
	}
	if optimizer == "adam" {
		if beta1 <= 0 || beta1 >= 1 {
			beta1 = 0.9
		}
		return (2 + 2*beta1) / (lr * (1 - beta1))
	}
	return (2 + 2*beta1) / lr
}

func setSharpness(s *snapshot.Snapshot) {
	s.SharpnessThreshold = SharpnessThreshold(s.Optimizer, s.LearningRate, s.Beta1)
	if l1, ok := s.Lambda1(); ok && s.SharpnessThreshold > 0 {
		s.SharpnessRatio = l1 / s.SharpnessThreshold
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
	if s.Trace != nil && !finite(s.Trace.Value, s.Trace.StdErr) {
		return false
	}
	if s.ESD != nil && (!finite(s.ESD.Nodes...) || !finite(s.ESD.Weights...)) {
		return false
	}
	return true
}

var errNonFinite = errors.New("Hessian-vector product is NaN or infinite")

// guard turns a non-finite product into errNonFinite, so that a diverging
// model is reported as such rather than as whatever an estimator makes of NaN.
type guard struct{ op hvp.Operator }

func (g guard) Dim() int { return g.op.Dim() }

func (g guard) Apply(dst, v []float64) error {
	if err := g.op.Apply(dst, v); err != nil {
		if errors.Is(err, trainer.ErrNonFinite) {
			return fmt.Errorf("%w: %v", errNonFinite, err)
		}
		return err
	}
	if !finite(dst...) {
		return errNonFinite
	}
	return nil
}

// Wait blocks until an in-flight asynchronous probe has finished. The
// caller is done training, so the probe's remaining products run on every
// core from here on.
func (m *Monitor) Wait() {
	m.mu.Lock()
	m.draining = true
	if m.tailOp != nil {
		m.tailOp.SetWorkers(0)
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	m.draining = false
	m.mu.Unlock()
}

// setTailOp registers the in-flight asynchronous probe's operator: one
// chunk at a time while training runs, all at once while Wait waits.
func (m *Monitor) setTailOp(op *hvp.Mean) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tailOp = op
	if op == nil {
		return
	}
	if m.draining {
		op.SetWorkers(0)
	} else {
		op.SetWorkers(1)
	}
}
