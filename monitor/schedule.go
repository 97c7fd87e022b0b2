package monitor

import (
	"time"

	"github.com/hessmon/hessmon/snapshot"
)

// Plan is what the scheduler decided for one due step: the kind of probe
// and why, or Skip.
type Plan struct {
	Kind   snapshot.Kind
	Reason snapshot.Reason
	// Skip is a due step that gets no probe: its slot is busy, or the
	// budget does not pay for even a light probe.
	Skip bool
}

// scheduler decides, at every due step, between a full probe, a light one
// and none. It is the monitor's one scheduling mechanism: a fixed schedule
// (every FullEvery-th due step full, the rest light; synchronous runs use
// it, by default with every due step full) or a budget (asynchronous runs:
// the probes' measured cost to training held under Budget of training
// time). Triggers bring a full probe forward in both. It holds no lock:
// the monitor's mutex guards it.
type scheduler struct {
	fullEvery int // > 0: fixed schedule
	lightOnly bool
	noLight   bool // NoEigen: a light probe has nothing to compute
	budget    float64

	due  int // due steps seen
	trig triggers

	// The cost accounting, in training wall time. train is the
	// training loop's wall time (between Steps, plus the probes' time on its
	// goroutine), base the typical step
	// without a probe in flight, spent what probes cost training: the
	// caller-side time of building operators and running synchronous
	// probes, plus the excess of step times over base while an
	// asynchronous probe runs.
	train, spent time.Duration
	// extra is what triggered full probes cost: over budget by design, it
	// is reported but does not count against the budget.
	extra time.Duration
	base  time.Duration
	baseN int
	// What probes cost training per HVP (decayed sums over the finished
	// probes of both kinds), and the HVPs each kind took last: a probe's
	// cost is estimated as their product, so a full probe has an estimate
	// before the first one ran.
	costSum, hvpSum float64
	expect          map[snapshot.Kind]int
}

func newScheduler(cfg Config) *scheduler {
	s := &scheduler{fullEvery: cfg.FullEvery, lightOnly: cfg.LightOnly, budget: cfg.Budget,
		expect: map[snapshot.Kind]int{snapshot.KindLight: lightExpectHVPs, snapshot.KindFull: fullExpectHVPs(cfg)}}
	if !cfg.Async && s.fullEvery == 0 {
		s.fullEvery = 1 // synchronous: deterministic, every due step full
	}
	if cfg.NoEigen {
		s.fullEvery, s.lightOnly, s.noLight = 1, false, true
	}
	s.trig = newTriggers(cfg)
	return s
}

// observeStep counts one step's wall time d; busy says whether an
// asynchronous probe was running during it. It returns the step's excess
// over the typical probe-free step (negative when faster), which the
// caller charges to the probes in flight.
func (s *scheduler) observeStep(d time.Duration, busy bool) time.Duration {
	s.train += d
	if !busy {
		// A running mean over the last ~20 probe-free steps.
		s.baseN = min(s.baseN+1, 20)
		s.base += (d - s.base) / time.Duration(s.baseN)
		return 0
	}
	if s.baseN == 0 {
		return 0
	}
	return d - s.base
}

// chargeCaller adds d of a probe's time on the training loop's goroutine
// (building its operator, or all of a synchronous probe): the loop spent
// it, so it is training wall time as well as cost.
func (s *scheduler) chargeCaller(d time.Duration, p Plan) {
	s.train += d
	s.charge(d, p)
}

// charge adds d of the cost of a probe planned as p (the caller-side part
// or its share of a step's excess).
func (s *scheduler) charge(d time.Duration, p Plan) {
	if p.Reason.Trigger() {
		s.extra += d
		return
	}
	s.spent += d
}

// measured records what one finished probe of kind, of hvps products,
// cost training.
func (s *scheduler) measured(kind snapshot.Kind, d time.Duration, hvps int) {
	if hvps <= 0 {
		return
	}
	const keep = 0.8 // older probes fade: the machine's load changes
	s.costSum = keep*s.costSum + max(0, d.Seconds())
	s.hvpSum = keep*s.hvpSum + float64(hvps)
	s.expect[kind] = hvps
}

// estimate is the expected cost of a probe of kind, -1 before any probe
// was measured.
func (s *scheduler) estimate(kind snapshot.Kind) time.Duration {
	if s.hvpSum == 0 {
		return -1
	}
	return time.Duration(s.costSum / s.hvpSum * float64(s.expect[kind]) * float64(time.Second))
}

// lightExpectHVPs is a light probe's HVPs before one was measured (a warm
// one takes about 5 for λ1 and 5 for λmin).
const lightExpectHVPs = 10

// fullExpectHVPs guesses a full probe's HVPs from cfg before one ran: the
// ESD's steps, two products per eigenpair, half the trace's cap.
func fullExpectHVPs(cfg Config) int {
	n := 2 * cfg.TopK
	if !cfg.NoESD {
		n += cfg.ESDProbes * cfg.ESDSteps
	}
	if !cfg.NoTrace {
		n += cfg.TraceMaxHVPs / 2
	}
	return max(n, lightExpectHVPs)
}

// overhead is the measured share of training time the probes took:
// spent / (train − spent), the slowdown against a run without them.
func (s *scheduler) overhead() float64 {
	all := s.spent + s.extra
	plain := s.train - all
	if plain <= 0 || all <= 0 {
		return 0
	}
	return all.Seconds() / plain.Seconds()
}

// fits reports whether a probe costing c keeps the spent time within the
// budget's share of the probe-free training time.
func (s *scheduler) fits(c time.Duration) bool {
	plain := max(0, s.train-s.spent-s.extra)
	return float64(s.spent+c) <= s.budget*float64(plain)
}

// slots says which probe slots are free at a due step.
type slots struct{ light, full bool }

// decide plans due step number s.due+1.
func (s *scheduler) decide(free slots) Plan {
	s.due++
	if s.lightOnly {
		return s.light(free, snapshot.ReasonScheduled)
	}
	if r, ok := s.trig.pending(); ok && free.full {
		s.trig.fire()
		return Plan{Kind: snapshot.KindFull, Reason: r}
	}
	if s.fullEvery > 0 {
		if (s.due-1)%s.fullEvery == 0 {
			if free.full {
				return Plan{Kind: snapshot.KindFull, Reason: snapshot.ReasonScheduled}
			}
			return s.light(free, snapshot.ReasonScheduled)
		}
		return s.light(free, snapshot.ReasonScheduled)
	}
	// The budget: nothing measured yet, a light probe measures the cost
	// per HVP; then a full probe when its estimate fits, else a light one
	// when that fits, else none.
	full, light := s.estimate(snapshot.KindFull), s.estimate(snapshot.KindLight)
	if light < 0 {
		return s.light(free, snapshot.ReasonScheduled)
	}
	if free.full && s.fits(full) {
		return Plan{Kind: snapshot.KindFull, Reason: snapshot.ReasonBudget}
	}
	if !s.fits(light) {
		return Plan{Skip: true}
	}
	return s.light(free, snapshot.ReasonScheduled)
}

func (s *scheduler) light(free slots, r snapshot.Reason) Plan {
	if !free.light || s.noLight {
		return Plan{Skip: true}
	}
	return Plan{Kind: snapshot.KindLight, Reason: r}
}
