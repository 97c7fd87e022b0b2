package hessian_test

import (
	"testing"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

func TestRunMeta(t *testing.T) {
	d := &data.Dataset{Name: "toy", X: make([]float64, 6), Labels: []int{0, 1, 0}, Shape: data.Shape{H: 1, W: 2, C: 1}, Classes: 2}
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{2, 3, 2}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	o := hessian.RunOptions{ID: "r", Net: net, Optimizer: &trainer.SGD{LR: 0.1}, Data: d, LR: 0.1, Momentum: 0.9, Batch: 2,
		Steps: 30, Every: 5, Top: 3, ProbeBatch: 3, BNMode: "eval", Seed: 7}
	r := hessian.RunMeta(o)
	want := map[string]string{"data": "toy (3 samples)", "params": "17", "lr": "0.1", "momentum": "0.9", "batch": "2", "steps": "30",
		"every": "5", "top": "3", "probe_batch": "3", "bn_mode": "eval", "seed": "7"}
	if r.ID != "r" || r.Model != net.String() || r.Optimizer != "sgd" {
		t.Errorf("run %+v", r)
	}
	if len(r.Config) != len(want) {
		t.Errorf("config %v, want %v", r.Config, want)
	}
	for k, v := range want {
		if r.Config[k] != v {
			t.Errorf("config[%q] = %q, want %q", k, r.Config[k], v)
		}
	}
	o.WeightDecay = 1e-4
	if got := hessian.RunMeta(o).Config["wd"]; got != "0.0001" {
		t.Errorf("wd %q, want 0.0001", got)
	}
}
