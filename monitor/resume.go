package monitor

import (
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/snapshot"
)

// A run id is a promise: its stored history is not replaced silently. A
// monitor whose sink knows where the run's history ends (a StepStore, as
// *store.Store is) learns it in New, continues the probe schedule after
// it, and refuses a loop that restarts at a step already stored, unless
// WithExisting says what to do there.

// StepStore is a sink that knows the last step it holds for a run (false:
// none). *store.Store implements it.
type StepStore interface {
	LastStep(run string) (step int64, ok bool, err error)
}

// Replacer is a sink that can replace a stored snapshot when asked to
// explicitly. *store.Store implements it.
type Replacer interface {
	ReplaceSnapshot(snapshot.Snapshot) error
}

// ErrStepStored is returned by Step for a step at or before the last one
// the run's store holds, with the default ExistingError.
var ErrStepStored = errors.New("monitor: the store already holds this run up to a later step")

// Existing says what the monitor does at the steps its store already
// holds for the run.
type Existing int

const (
	// ExistingError, the default, makes Step at a stored step fail with
	// ErrStepStored: reusing a run id without resuming it is a mistake.
	ExistingError Existing = iota
	// ExistingSkip probes none of the stored steps and keeps their
	// snapshots: a run resumed from a checkpoint before its last snapshot
	// keeps what the interrupted run wrote (hessmon train --resume).
	ExistingSkip
	// ExistingOverwrite probes them again and replaces their snapshots in
	// every sink that is a Replacer: the caller's consent to rewrite the
	// history.
	ExistingOverwrite
)

// WithExisting sets what the monitor does at steps its store already holds.
func WithExisting(e Existing) Option { return func(m *Monitor) { m.hist.policy = e } }

// history is the monitor's knowledge of the run's stored past.
type history struct {
	policy  Existing
	last    int64 // the last stored step, when stored
	stored  bool
	started bool // Step has been called
}

// learnHistory asks the first sink that is a StepStore where the run's
// history ends and, with ExistingOverwrite, makes the Replacer sinks
// replace.
func (m *Monitor) learnHistory() error {
	for _, s := range m.sinks {
		if ss, ok := s.(StepStore); ok {
			last, ok, err := ss.LastStep(m.run)
			if err != nil {
				return fmt.Errorf("monitor: reading the run's last stored step: %w", err)
			}
			m.hist.last, m.hist.stored = last, ok
			break
		}
	}
	if m.hist.policy == ExistingOverwrite {
		for i, s := range m.sinks {
			if r, ok := s.(Replacer); ok {
				m.sinks[i] = SinkFunc(r.ReplaceSnapshot)
			}
		}
	}
	return nil
}

// checkHistoryLocked applies the rule at the loop's step. At the first
// step the schedule continues the stored history: the last probe counts as
// the last stored step, or, after a restart at step s of a run with none,
// as the last multiple of the interval before s, so that probes keep their
// steps. With ExistingOverwrite, stored steps are probed again.
func (m *Monitor) checkHistoryLocked(step int64) error {
	h := &m.hist
	if !h.started {
		h.started = true
		if m.lastProbe == 0 && step > 1 && m.every > 0 {
			m.lastProbe = (step - 1) / m.every * m.every
		}
		if h.stored && h.policy != ExistingOverwrite {
			m.lastProbe = max(m.lastProbe, h.last)
		}
	}
	if h.stored && step <= h.last && h.policy == ExistingError {
		return fmt.Errorf("%w: run %q is stored up to step %d and the loop is at step %d; "+
			"use a new run id, resume after step %d, or ask for WithExisting(ExistingSkip or ExistingOverwrite)",
			ErrStepStored, m.run, h.last, step, h.last)
	}
	return nil
}
