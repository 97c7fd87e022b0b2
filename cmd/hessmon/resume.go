package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// resumeFlags are train's run-identity and checkpoint flags.
type resumeFlags struct {
	resume    bool
	overwrite bool
	every     int64
}

const resumeHelp = "continue run --run from its last checkpoint (weights, optimiser state, step counter and data order), with the " +
	"configuration it was started with (--steps may grow). Snapshots the interrupted run wrote after that checkpoint are kept, " +
	"and their steps are not probed again (deterministic training reaches the same weights there)"

func (r *resumeFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&r.resume, "resume", false, resumeHelp)
	fs.BoolVar(&r.overwrite, "overwrite", false, "replace the stored snapshots of the steps trained again (with the run's own "+
		"configuration): without --resume the run trains again from step 1 (its warm state is reused), with --resume the "+
		"steps after the checkpoint are probed again instead of kept")
	fs.Int64Var(&r.every, "checkpoint-every", 100, "checkpoint the training state into the store every N steps, after the last step "+
		"and on SIGINT/SIGTERM, so that --resume continues after a crash (0: never)")
}

// flagOf names the train flag behind a key of the stored run metadata.
var flagOf = map[string]string{
	"lr": "--lr", "momentum": "--momentum", "wd": "--wd", "batch": "--batch", "every": "--every", "top": "--top",
	"probe_batch": "--probe-batch", "bn_mode": "--bn-mode", "seed": "--seed", "data": "--data", "optimizer": "--opt",
	"model": "--model/--hidden/--act/--bn", "params": "the model (parameters)",
}

// describeChanges writes changes as flags: "--lr 0.05 → 0.4, --momentum 0.9 → 0".
func describeChanges(changes []snapshot.Change) string {
	parts := make([]string, len(changes))
	for i, c := range changes {
		name := flagOf[c.Key]
		if name == "" {
			name = c.Key
		}
		old, next := c.Old, c.New
		if old == "" {
			old = "(unset)"
		}
		if next == "" {
			next = "(unset)"
		}
		parts[i] = fmt.Sprintf("%s %s → %s", name, old, next)
	}
	return strings.Join(parts, ", ")
}

// openRun checks that meta is the run stored under its id, if any, by
// store.StartRun's rule, and records it. With resume it returns the
// checkpoint to continue from (nil: none was written, training restarts
// from step 0 and skips the stored steps).
func openRun(st *store.Store, meta snapshot.Run, rf resumeFlags, log *slog.Logger) (*trainer.Checkpoint, error) {
	start, err := st.StartRun(meta, store.StartOptions{Resume: rf.resume, Overwrite: rf.overwrite, Ignore: []string{"steps"}})
	if err != nil {
		return nil, runErr(st, meta.ID, err)
	}
	if !rf.resume {
		if rf.overwrite && start.Exists {
			log.Info("training run again from step 1, replacing its snapshots (--overwrite)", "run", meta.ID)
		}
		return nil, st.PutRun(start.Run)
	}
	cp, err := hessian.DecodeCheckpoint(meta.ID, start.Checkpoint, start.CheckpointStep)
	if err != nil {
		return nil, err
	}
	step := start.CheckpointStep
	log.Info("resuming run", "run", meta.ID, "after_step", step, "resumed_times", len(start.Run.Resumes))
	if start.LastStep > step {
		what := "kept: their steps are not probed again"
		if rf.overwrite {
			what = "probed again and replaced (--overwrite)"
		}
		log.Info("snapshots written after the checkpoint are "+what, "run", meta.ID, "after_step", step, "up_to_step", start.LastStep)
	}
	return cp, st.PutRun(start.Run)
}

// runErr words store.StartRun's refusals in train's flags.
func runErr(st *store.Store, run string, err error) error {
	var changed *store.ConfigChangedError
	var inUse *store.RunInUseError
	switch {
	case errors.As(err, &changed):
		return usageErr("run %q in %s was started with another configuration: %s. Use a new --run id, "+
			"or repeat the stored configuration (and --resume to continue it)", run, st.Path(), describeChanges(changed.Changes))
	case errors.As(err, &inUse):
		return usageErr("run %q in %s already holds steps up to %d: --resume continues it, a new --run id starts another "+
			"(--overwrite trains it again, replacing its snapshots)", run, st.Path(), inUse.LastStep)
	case errors.Is(err, store.ErrUnknownRun):
		return usageErr("--resume: %s holds no run %q", st.Path(), run)
	}
	return err
}

// existingPolicy is what the monitor does at stored steps: a resumed run
// keeps the snapshots the interrupted one wrote after its checkpoint
// unless rf.overwrite replaces them.
func existingPolicy(rf resumeFlags) monitor.Existing {
	switch {
	case rf.overwrite:
		return monitor.ExistingOverwrite
	case rf.resume:
		return monitor.ExistingSkip
	}
	return monitor.ExistingError
}
