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

	// The cost accounting, in training wall time. train is the time
	// between Steps (a synchronous probe excluded), base the typical step
	// without a probe in flight, spent what probes cost training: the
	// caller-side time of building operators and running synchronous
	// probes, plus the excess of step times over base while an
	// asynchronous probe runs.
	train, spent time.Duration
	base         time.Duration
	baseN        int
	// cost is the last measured cost to training of each kind (-1: not
	// measured yet).
	cost map[snapshot.Kind]time.Duration
}

func newScheduler(cfg Config) *scheduler {
	s := &scheduler{fullEvery: cfg.FullEvery, lightOnly: cfg.LightOnly, budget: cfg.Budget,
		cost: map[snapshot.Kind]time.Duration{snapshot.KindLight: -1, snapshot.KindFull: -1}}
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

// charge adds d of probe cost (the caller-side part or a step's excess).
func (s *scheduler) charge(d time.Duration) { s.spent += d }

// measured records what one finished probe of kind cost training.
func (s *scheduler) measured(kind snapshot.Kind, d time.Duration) { s.cost[kind] = max(0, d) }

// overhead is the measured share of training time the probes took:
// spent / (train − spent), the slowdown against a run without them.
func (s *scheduler) overhead() float64 {
	plain := s.train - s.spent
	if plain <= 0 || s.spent <= 0 {
		return 0
	}
	return s.spent.Seconds() / plain.Seconds()
}

// fits reports whether a probe costing c keeps the spent time within the
// budget's share of the probe-free training time.
func (s *scheduler) fits(c time.Duration) bool {
	if c < 0 {
		return true // never measured: measure it
	}
	plain := max(0, s.train-s.spent)
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
	if free.full && s.fits(s.cost[snapshot.KindFull]) {
		return Plan{Kind: snapshot.KindFull, Reason: snapshot.ReasonBudget}
	}
	if !s.fits(s.cost[snapshot.KindLight]) {
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
