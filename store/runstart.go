package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/hessmon/hessmon/snapshot"
)

// StartOptions say how a run id that may already be stored is taken up.
type StartOptions struct {
	// Resume continues the stored run from its checkpoint.
	Resume bool
	// Overwrite lets a run that holds a history train again from step 1
	// (without Resume).
	Overwrite bool
	// Ignore names the configuration keys that may change between the
	// stored run and the new one (for example the step count, which a
	// resumed run may raise).
	Ignore []string
}

// RunStart is what StartRun decided for a run id.
type RunStart struct {
	// Run is the metadata to record with PutRun: the new run's, with the
	// stored run's start time and lineage, and this resumption added.
	Run snapshot.Run
	// Exists says the id was stored before.
	Exists bool
	// Checkpoint is the training state to resume from, at CheckpointStep
	// (nil: not resumed, or no checkpoint was written).
	Checkpoint     []byte
	CheckpointStep int64
	// LastStep is the newest stored snapshot's step when Resume found
	// snapshots after the checkpoint (0 otherwise).
	LastStep int64
}

// ConfigChangedError refuses a run id that was stored with another
// configuration.
type ConfigChangedError struct {
	Run, Path string
	Changes   []snapshot.Change
}

func (e *ConfigChangedError) Error() string {
	return fmt.Sprintf("store: run %q in %s was started with another configuration (%d changes)", e.Run, e.Path, len(e.Changes))
}

// RunInUseError refuses to start a stored run again from step 1: it holds
// snapshots or a checkpoint up to LastStep.
type RunInUseError struct {
	Run, Path string
	LastStep  int64
}

func (e *RunInUseError) Error() string {
	return fmt.Sprintf("store: run %q in %s already holds steps up to %d", e.Run, e.Path, e.LastStep)
}

// StartRun applies the rule that a run id is a promise: a stored id may
// only be taken up with the configuration it was started with; without
// opt.Resume one that holds a history is refused unless opt.Overwrite;
// with opt.Resume the id must be stored, and its checkpoint (if any) is
// returned with the resumption added to the run's lineage. StartRun
// writes nothing: the caller records the returned Run with PutRun once it
// has accepted the checkpoint.
func (s *Store) StartRun(meta snapshot.Run, opt StartOptions) (RunStart, error) {
	old, err := s.Run(meta.ID)
	exists := err == nil
	if err != nil && !errors.Is(err, ErrUnknownRun) {
		return RunStart{}, err
	}
	if exists {
		if ch := old.Changes(meta, opt.Ignore...); len(ch) > 0 {
			return RunStart{}, &ConfigChangedError{Run: meta.ID, Path: s.Path(), Changes: ch}
		}
		meta.Started, meta.Resumes = old.Started, old.Resumes
	}
	start := RunStart{Run: meta, Exists: exists}
	if !opt.Resume {
		if exists && !opt.Overwrite {
			if err := s.refuseReuse(meta.ID); err != nil {
				return RunStart{}, err
			}
		}
		return start, nil
	}
	if !exists {
		return RunStart{}, fmt.Errorf("store: %w %q", ErrUnknownRun, meta.ID)
	}
	step, state, ok, err := s.Checkpoint(meta.ID)
	if err != nil {
		return RunStart{}, err
	}
	if ok {
		start.Checkpoint = state
	}
	start.CheckpointStep = step
	start.Run.Resumes = append(start.Run.Resumes, snapshot.Resume{AtStep: step, Time: time.Now().UTC()})
	if last, ok, err := s.LastStep(meta.ID); err == nil && ok && last > step {
		start.LastStep = last
	}
	return start, nil
}

// refuseReuse fails when run already holds a history that a fresh start
// from step 1 would collide with.
func (s *Store) refuseReuse(run string) error {
	last, hasSnaps, err := s.LastStep(run)
	if err != nil {
		return err
	}
	_, _, hasCk, err := s.Checkpoint(run)
	if err != nil {
		return err
	}
	if hasSnaps || hasCk {
		return &RunInUseError{Run: run, Path: s.Path(), LastStep: last}
	}
	return nil
}
