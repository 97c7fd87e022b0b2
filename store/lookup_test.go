package store

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/snapshot"
)

func TestResolveRun(t *testing.T) {
	s, _ := newStore(t)
	if _, err := s.ResolveRun(""); err == nil || !strings.Contains(err.Error(), "no runs yet") {
		t.Errorf("empty store: %v, want 'no runs yet'", err)
	}
	if _, err := s.ResolveRun("x"); !errors.Is(err, ErrUnknownRun) {
		t.Errorf("unknown run in an empty store: %v, want ErrUnknownRun", err)
	}
	if err := s.PutRun(snapshot.Run{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ResolveRun(""); err != nil || got.ID != "a" {
		t.Errorf("the only run: %q, %v; want a", got.ID, err)
	}
	if err := s.PutRun(snapshot.Run{ID: "b"}); err != nil {
		t.Fatal(err)
	}
	var amb *AmbiguousRunError
	if _, err := s.ResolveRun(""); !errors.As(err, &amb) || strings.Join(amb.IDs, ",") != "a,b" {
		t.Errorf("two runs: %v, want an AmbiguousRunError naming a and b", err)
	}
	if got, err := s.ResolveRun("b"); err != nil || got.ID != "b" {
		t.Errorf("run b: %q, %v", got.ID, err)
	}
	if _, err := s.ResolveRun("c"); !errors.Is(err, ErrUnknownRun) || !strings.Contains(err.Error(), "known runs: a, b") {
		t.Errorf("unknown run: %v, want ErrUnknownRun listing a, b", err)
	}
}

func TestKnownSteps(t *testing.T) {
	s, _ := newStore(t)
	if got := s.KnownSteps("r"); got != "none" {
		t.Errorf("no snapshots: %q, want none", got)
	}
	var all []string
	for step := int64(0); step < 20; step++ {
		if err := s.PutSnapshot(fullSnapshot("r", step*10)); err != nil {
			t.Fatal(err)
		}
		all = append(all, strconv.FormatInt(step*10, 10))
		if step == 2 {
			if got, want := s.KnownSteps("r"), strings.Join(all, ", "); got != want {
				t.Errorf("3 steps: %q, want %q", got, want)
			}
		}
	}
	want := strings.Join(all[:8], ", ") + ", …, " + strings.Join(all[16:], ", ")
	if got := s.KnownSteps("r"); got != want {
		t.Errorf("20 steps: %q, want %q", got, want)
	}
}
