package store

import (
	"errors"
	"testing"
	"time"

	"github.com/hessmon/hessmon/snapshot"
)

func TestStartRun(t *testing.T) {
	s, _ := newStore(t)
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	meta := snapshot.Run{ID: "r", Model: "mlp", Optimizer: "sgd", Started: started, Config: map[string]string{"lr": "0.1", "steps": "10"}}

	// A new id: nothing stored, nothing to resume.
	if _, err := s.StartRun(meta, StartOptions{Resume: true}); !errors.Is(err, ErrUnknownRun) {
		t.Fatalf("resume of an unknown run: err %v, want ErrUnknownRun", err)
	}
	st, err := s.StartRun(meta, StartOptions{})
	if err != nil || st.Exists {
		t.Fatalf("new run: %+v, %v", st, err)
	}
	if err := s.PutRun(st.Run); err != nil {
		t.Fatal(err)
	}
	// Stored without history: it may start again.
	if _, err := s.StartRun(meta, StartOptions{}); err != nil {
		t.Fatalf("stored run without history: %v", err)
	}
	if err := s.PutSnapshot(probe("r", 4, false)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCheckpoint("r", 3, []byte("state")); err != nil {
		t.Fatal(err)
	}
	var inUse *RunInUseError
	if _, err := s.StartRun(meta, StartOptions{}); !errors.As(err, &inUse) || inUse.LastStep != 4 {
		t.Fatalf("reuse: err %v, want RunInUseError at step 4", err)
	}
	if _, err := s.StartRun(meta, StartOptions{Overwrite: true}); err != nil {
		t.Fatalf("overwrite: %v", err)
	}

	changed := meta
	changed.Started = started.Add(time.Hour)
	changed.Config = map[string]string{"lr": "0.2", "steps": "10"}
	var ce *ConfigChangedError
	if _, err := s.StartRun(changed, StartOptions{Resume: true}); !errors.As(err, &ce) ||
		len(ce.Changes) != 1 || ce.Changes[0] != (snapshot.Change{Key: "lr", Old: "0.1", New: "0.2"}) {
		t.Fatalf("changed config: err %v, want one change of lr", err)
	}
	changed.Config = map[string]string{"lr": "0.1", "steps": "20"} // steps alone may change when ignored
	if _, err := s.StartRun(changed, StartOptions{Resume: true}); !errors.As(err, &ce) {
		t.Fatalf("steps changed without Ignore: err %v", err)
	}
	res, err := s.StartRun(changed, StartOptions{Resume: true, Ignore: []string{"steps"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Checkpoint) != "state" || res.CheckpointStep != 3 || res.LastStep != 4 {
		t.Errorf("resume: checkpoint %q at %d, last step %d; want \"state\" at 3, 4", res.Checkpoint, res.CheckpointStep, res.LastStep)
	}
	if !res.Run.Started.Equal(started) || len(res.Run.Resumes) != 1 || res.Run.Resumes[0].AtStep != 3 {
		t.Errorf("resume keeps the start %v and adds one resumption at 3: %+v", started, res.Run)
	}
	if got, _ := s.Run("r"); len(got.Resumes) != 0 {
		t.Errorf("StartRun wrote the run: %+v", got)
	}
}
