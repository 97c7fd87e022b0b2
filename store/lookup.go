package store

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hessmon/hessmon/snapshot"
)

// AmbiguousRunError is ResolveRun's error for an empty id in a store of
// several runs: the caller must pick one of IDs.
type AmbiguousRunError struct {
	Path string
	IDs  []string
}

func (e *AmbiguousRunError) Error() string {
	return fmt.Sprintf("%s holds %d runs: %s", e.Path, len(e.IDs), strings.Join(e.IDs, ", "))
}

// ResolveRun returns the summary of run id, or of the only run when id is
// empty (several runs: an *AmbiguousRunError). An unknown id wraps
// ErrUnknownRun and lists the known ones, so that the error alone says
// what to ask for instead.
func (s *Store) ResolveRun(id string) (snapshot.RunSummary, error) {
	runs, err := s.Runs()
	if err != nil {
		return snapshot.RunSummary{}, err
	}
	if id == "" {
		switch len(runs) {
		case 0:
			return snapshot.RunSummary{}, fmt.Errorf("%s holds no runs yet", s.Path())
		case 1:
			return runs[0], nil
		}
		return snapshot.RunSummary{}, &AmbiguousRunError{Path: s.Path(), IDs: runIDs(runs)}
	}
	for _, r := range runs {
		if r.ID == id {
			return r, nil
		}
	}
	if len(runs) == 0 {
		return snapshot.RunSummary{}, fmt.Errorf("%w %q: %s holds no runs yet", ErrUnknownRun, id, s.Path())
	}
	return snapshot.RunSummary{}, fmt.Errorf("%w %q in %s; known runs: %s", ErrUnknownRun, id, s.Path(), strings.Join(runIDs(runs), ", "))
}

func runIDs(runs []snapshot.RunSummary) []string {
	ids := make([]string, len(runs))
	for i, r := range runs {
		ids[i] = r.ID
	}
	return ids
}

// KnownSteps lists run's steps for an "unknown step" error: all of them up
// to 16, else the first 8 and the last 4; "none" for an empty or unreadable
// run.
func (s *Store) KnownSteps(run string) string {
	var steps []string
	for sn, err := range s.All(run, Query{Fields: Headers}) {
		if err != nil {
			break
		}
		steps = append(steps, strconv.FormatInt(sn.Step, 10))
	}
	switch {
	case len(steps) == 0:
		return "none"
	case len(steps) > 16:
		return strings.Join(steps[:8], ", ") + ", …, " + strings.Join(steps[len(steps)-4:], ", ")
	}
	return strings.Join(steps, ", ")
}
