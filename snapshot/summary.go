package snapshot

import (
	"errors"
	"math"
	"time"
)

// Lookup errors shared by every snapshot source (the bbolt store, the live
// monitor's in-memory view), so that the HTTP API and the CLI can tell "no
// such run" from a real failure with errors.Is, whatever the source.
var (
	ErrUnknownRun  = errors.New("unknown run")
	ErrUnknownStep = errors.New("unknown step")
)

// RunSummary is the one-line view of a run: what `hessmon runs` prints and
// `/api/runs` serves. FirstStep and LastStep are meaningful only when
// Snapshots > 0. FirstLambda1 and LastLambda1 come from the first and last
// successful snapshots carrying a finite λ1, and are nil when there is none
// (JSON null rather than a NaN that JSON cannot encode).
type RunSummary struct {
	ID        string    `json:"id"`
	Model     string    `json:"model,omitempty"`
	Optimizer Optimizer `json:"optimizer,omitempty"`
	Started   time.Time `json:"started"`
	FirstStep int64     `json:"first_step"`
	LastStep  int64     `json:"last_step"`
	Snapshots int       `json:"snapshots"`
	Failures  int       `json:"failures"`
	// Light counts the light probes among Snapshots; the others are full.
	Light        int      `json:"light,omitempty"`
	FirstLambda1 *float64 `json:"first_lambda1"`
	LastLambda1  *float64 `json:"last_lambda1"`
	Resumes      []Resume `json:"resumes,omitempty"`
}

// NewRunSummary starts an empty summary of r.
func NewRunSummary(r Run) RunSummary {
	return RunSummary{ID: r.ID, Model: r.Model, Optimizer: r.Optimizer, Started: r.Started, Resumes: r.Resumes}
}

// Add folds s into the summary. Snapshots must be added in increasing step
// order, as a store cursor yields them.
func (r *RunSummary) Add(s *Snapshot) {
	if r.Snapshots == 0 {
		r.FirstStep = s.Step
	}
	r.LastStep = s.Step
	r.Snapshots++
	if s.IsLight() {
		r.Light++
	}
	if s.Failed() {
		r.Failures++
		return
	}
	if l1, ok := s.Lambda1(); ok && !math.IsNaN(l1) && !math.IsInf(l1, 0) {
		if r.FirstLambda1 == nil {
			r.FirstLambda1 = &l1
		}
		last := l1
		r.LastLambda1 = &last
	}
}
