package snapshot

import (
	"slices"
	"testing"
)

func TestRunChanges(t *testing.T) {
	a := Run{ID: "r", Model: "mlp", Optimizer: "sgd", Config: map[string]string{"lr": "0.05", "momentum": "0.9", "steps": "300", "seed": "1"}}
	b := Run{ID: "r", Model: "mlp", Optimizer: "adam", Config: map[string]string{"lr": "0.4", "momentum": "0.9", "steps": "600", "wd": "1e-4"}}
	want := []Change{{"optimizer", "sgd", "adam"}, {"lr", "0.05", "0.4"}, {"seed", "1", ""}, {"wd", "", "1e-4"}}
	if got := a.Changes(b, "steps"); !slices.Equal(got, want) {
		t.Errorf("Changes = %v, want %v", got, want)
	}
	if got := a.Changes(a); len(got) != 0 {
		t.Errorf("a run differs from itself: %v", got)
	}
}
