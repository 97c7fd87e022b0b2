package monitor

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// TestStoredStepsAreKept is the run-id rule through the monitor, with a
// dense operator of a known spectrum: a second monitor on the stored run
// refuses the steps already stored, leaving them byte for byte; one
// resuming after them continues the schedule; ExistingSkip keeps the
// stored steps and probes the new ones; ExistingOverwrite replaces.
func TestStoredStepsAreKept(t *testing.T) {
	a := spectrumMatrix(testSpectrum(40), 1)
	lambda1 := slices.Max(testSpectrum(40))
	newOp := func() (hvp.Operator, error) { return hvp.NewDense(a), nil }
	cfg := Config{Every: 10, TopK: 1, EigenTol: 1e-8, NoTrace: true, NoESD: true, MaxHVPs: 400}
	st, err := store.Open(t.TempDir()+"/h.db", store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	steps := func(m *Monitor, from, to int64) error {
		for s := from; s <= to; s++ {
			if err := m.Step(ctx, StepInfo{Step: s, Loss: float64(s)}, newOp); err != nil {
				return err
			}
		}
		return m.Close(ctx)
	}
	stored := func() (out []int64) {
		snaps, err := st.Read("r", store.Query{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range snaps {
			out = append(out, s.Step)
		}
		return out
	}
	encoded := func(step int64) string {
		s, err := st.Snapshot("r", step)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := store.EncodeSnapshot(s)
		return string(b)
	}
	m, _ := New("r", cfg, WithSink(st), WithLogger(discardLogger()))
	if err := steps(m, 1, 30); err != nil {
		t.Fatal(err)
	}
	if got := stored(); !slices.Equal(got, []int64{10, 20, 30}) {
		t.Fatalf("stored steps %v", got)
	}
	at20 := encoded(20)

	// The same id from step 1 again: refused at once, nothing written.
	m, _ = New("r", cfg, WithSink(st), WithLogger(discardLogger()))
	if err := m.Step(ctx, StepInfo{Step: 1}, newOp); !errors.Is(err, ErrStepStored) {
		t.Fatalf("restart at step 1: %v, want ErrStepStored", err)
	}
	_ = m.Close(ctx)
	if encoded(20) != at20 {
		t.Error("a refused restart changed step 20")
	}

	// Resumed after the last stored step: the schedule goes on at 40.
	m, _ = New("r", cfg, WithSink(st), WithLogger(discardLogger()))
	if err := steps(m, 31, 45); err != nil {
		t.Fatal(err)
	}
	if got := stored(); !slices.Equal(got, []int64{10, 20, 30, 40}) {
		t.Errorf("after resuming at 31: stored steps %v", got)
	}

	// From an earlier checkpoint, keeping what is stored.
	m, _ = New("r", cfg, WithSink(st), WithLogger(discardLogger()), WithExisting(ExistingSkip))
	if err := steps(m, 11, 50); err != nil {
		t.Fatal(err)
	}
	if got := stored(); !slices.Equal(got, []int64{10, 20, 30, 40, 50}) || encoded(20) != at20 {
		t.Errorf("skip: stored steps %v, step 20 unchanged %v", got, encoded(20) == at20)
	}
	if s, _ := st.Snapshot("r", 50); s.Failed() || len(s.Eigenvalues) != 1 || math.Abs(s.Eigenvalues[0]-lambda1) > 1e-6*lambda1 {
		t.Errorf("step 50: λ %v, want λ1 = %v", s.Eigenvalues, lambda1)
	}

	// With consent, the stored steps are probed again and replaced.
	m, _ = New("r", cfg, WithSink(st), WithLogger(discardLogger()), WithExisting(ExistingOverwrite))
	var seen []int64
	m.sinks = append(m.sinks, SinkFunc(func(s snapshot.Snapshot) error { seen = append(seen, s.Step); return nil }))
	if err := steps(m, 1, 20); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int64{10, 20}) || encoded(20) == at20 {
		t.Errorf("overwrite: probed %v, step 20 replaced %v", seen, encoded(20) != at20)
	}
	if s, _ := st.Snapshot("r", 20); s.Loss != 20 {
		t.Errorf("replaced step 20 has loss %v", s.Loss)
	}
}
