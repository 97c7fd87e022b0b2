package store

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hessmon/hessmon/snapshot"
)

func TestReadFields(t *testing.T) {
	s, _ := newStore(t)
	withBlocks := func(step int64) snapshot.Snapshot {
		sn := fullSnapshot("r", step)
		sn.BlockMass = []snapshot.BlockValue{{Name: "fc1.weight", Value: 0.75}}
		sn.BlockLambda1 = []snapshot.BlockValue{{Name: "fc1.weight", Value: 9, Residual: 1e-6}}
		return sn
	}
	for step := range int64(5) {
		if err := s.PutSnapshot(withBlocks(step)); err != nil {
			t.Fatal(err)
		}
	}
	full := withBlocks(3)
	for _, c := range []struct {
		f    Fields
		want func(*snapshot.Snapshot)
	}{
		{Headers, func(s *snapshot.Snapshot) { s.Eigenvectors, s.Trace, s.ESD, s.BlockLambda1 = nil, nil, nil, nil }},
		{WithTrace, func(s *snapshot.Snapshot) { s.Eigenvectors, s.ESD = nil, nil }},
		{WithESD, func(s *snapshot.Snapshot) { s.Eigenvectors, s.Trace, s.BlockLambda1 = nil, nil, nil }},
		{WithTrace | WithESD, func(s *snapshot.Snapshot) { s.Eigenvectors = nil }},
		{AllFields, func(*snapshot.Snapshot) {}},
	} {
		want := full
		c.want(&want)
		got, err := s.Read("r", Query{From: 3, To: 3, Fields: c.f})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("fields %b: %d snapshots", c.f, len(got))
		}
		if diff := cmp.Diff(want, got[0], sameSnapshot); diff != "" {
			t.Errorf("fields %b (-want +got):\n%s", c.f, diff)
		}
	}
}

func TestReadPage(t *testing.T) {
	s, _ := newStore(t)
	for step := int64(0); step < 100; step += 10 {
		if err := s.PutSnapshot(fullSnapshot("r", step)); err != nil {
			t.Fatal(err)
		}
	}
	steps := func(snaps []snapshot.Snapshot) (out []int64) {
		for _, sn := range snaps {
			out = append(out, sn.Step)
		}
		return out
	}
	for _, c := range []struct {
		from, to int64
		limit    int
		want     []int64
	}{
		{0, -1, 3, []int64{0, 10, 20}},
		{15, 0, 2, []int64{20, 30}},
		{15, 35, 10, []int64{20, 30}},
		{85, -1, 5, []int64{90}},
		{0, 25, 0, []int64{0, 10, 20}},
		{95, -1, 5, nil},
		{0, 0, 1, []int64{0}},
	} {
		got, err := s.Read("r", Query{From: c.from, To: c.to, Limit: c.limit, Fields: WithTrace | WithESD})
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(steps(got), c.want) {
			t.Errorf("from %d to %d limit %d: steps %v, want %v", c.from, c.to, c.limit, steps(got), c.want)
		}
		for _, sn := range got {
			if sn.Eigenvectors != nil || sn.Trace == nil || sn.ESD == nil {
				t.Errorf("page without vectors: vectors %v, trace %v, ESD %v", sn.Eigenvectors != nil, sn.Trace != nil, sn.ESD != nil)
			}
		}
	}
	got, err := s.Read("r", Query{Limit: 1, Fields: AllFields})
	if err != nil || len(got) != 1 || len(got[0].Eigenvectors) != 3 {
		t.Errorf("vectors: %v, %v", got, err)
	}
	if _, err := s.Read("nope", Query{Limit: 1}); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("unknown run: %v, want ErrUnknownRun", err)
	}
}

// TestDuplicateSnapshot: a run id is a promise. A second Put of a stored
// (run, step) fails and leaves the first value byte for byte; the explicit
// overwrite (ReplaceSnapshot, or Options.Overwrite) replaces it.
func TestDuplicateSnapshot(t *testing.T) {
	s, path := newStore(t)
	first, second := probe("r", 50, false), probe("r", 50, false)
	second.Eigenvalues[0] += 1
	if err := s.PutSnapshot(first); err != nil {
		t.Fatal(err)
	}
	want, _ := EncodeSnapshot(first)
	if err := s.PutSnapshot(second); !errors.Is(err, ErrExists) || !errors.Is(err, snapshot.ErrDuplicate) {
		t.Fatalf("duplicate Put: %v, want ErrExists", err)
	}
	got, err := s.Snapshot("r", 50)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := EncodeSnapshot(got); string(b) != string(want) {
		t.Error("a refused Put changed the stored snapshot")
	}
	if err := s.ReplaceSnapshot(second); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Snapshot("r", 50); got.Eigenvalues[0] != second.Eigenvalues[0] {
		t.Errorf("after ReplaceSnapshot λ1 = %v, want %v", got.Eigenvalues[0], second.Eigenvalues[0])
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o, err := Open(path, Options{NoSync: true, Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := o.PutSnapshot(first); err != nil {
		t.Fatalf("Put with Options.Overwrite: %v", err)
	}
	if got, _ := o.Snapshot("r", 50); got.Eigenvalues[0] != first.Eigenvalues[0] {
		t.Errorf("after an overwriting Put λ1 = %v, want %v", got.Eigenvalues[0], first.Eigenvalues[0])
	}
}

func TestLastStepAndCheckpoint(t *testing.T) {
	s, _ := newStore(t)
	if _, ok, err := s.LastStep("r"); ok || err != nil {
		t.Fatalf("LastStep of an unknown run: ok %v, %v", ok, err)
	}
	for _, step := range []int64{50, 100, 1 << 40} {
		if err := s.PutSnapshot(probe("r", step, false)); err != nil {
			t.Fatal(err)
		}
	}
	if step, ok, err := s.LastStep("r"); !ok || err != nil || step != 1<<40 {
		t.Errorf("LastStep = %d, %v, %v; want %d", step, ok, err, int64(1<<40))
	}
	if _, _, ok, err := s.Checkpoint("r"); ok || err != nil {
		t.Fatalf("no checkpoint yet: ok %v, %v", ok, err)
	}
	for _, c := range []struct {
		step  int64
		state string
	}{{100, "first"}, {200, "second, longer"}} {
		if err := s.PutCheckpoint("r", c.step, []byte(c.state)); err != nil {
			t.Fatal(err)
		}
		step, state, ok, err := s.Checkpoint("r")
		if !ok || err != nil || step != c.step || string(state) != c.state {
			t.Errorf("Checkpoint = %d %q %v %v, want %d %q", step, state, ok, err, c.step, c.state)
		}
	}
}
