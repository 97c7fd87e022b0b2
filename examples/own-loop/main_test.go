package main

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"testing"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// trainerTwin builds hessmon's own MLP with the weights p, for the exact
// R-operator Hessian of the same function.
func trainerTwin(t *testing.T, m mlp, p []float64) *trainer.Network {
	t.Helper()
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{m.in, m.hidden, m.out}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if net.Dim() != len(p) {
		t.Fatalf("trainer MLP has %d parameters, the own loop's %d", net.Dim(), len(p))
	}
	copy(net.Params(), p)
	return net
}

func probeBatch(x []float64, y []int) trainer.Batch {
	t := trainer.NewTensor(len(y), trainer.Shape{H: 1, W: 1, C: 784})
	copy(t.Data, x)
	return trainer.Batch{X: t, Labels: y}
}

// TestOwnGradientMatchesTrainer: the hand-written gradient is the trainer's
// gradient of the same function (truth for the finite differences below).
func TestOwnGradientMatchesTrainer(t *testing.T) {
	m := mlp{in: 784, hidden: 7, out: 10}
	p := make([]float64, m.dim())
	var s uint64 = 1
	m.init(p, func() float64 { s = s*6364136223846793005 + 1442695040888963407; return float64(s>>11) / (1 << 53) })
	train, _, err := data.LoadMNIST("")
	if err != nil {
		t.Skip(err)
	}
	x, y := train.Gather([]int{3, 1, 4, 1, 5, 9, 2, 6})
	got := make([]float64, len(p))
	loss := m.lossGrad(got, p, x, y)
	net := trainerTwin(t, m, p)
	want := make([]float64, len(p))
	wantLoss, err := net.NewTape().Grad(want, probeBatch(x, y), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(loss-wantLoss) > 1e-13 {
		t.Errorf("loss %v, trainer %v", loss, wantLoss)
	}
	var worst float64
	for i := range got {
		worst = math.Max(worst, math.Abs(got[i]-want[i]))
	}
	if worst > 1e-13 {
		t.Errorf("gradients differ by %g", worst)
	}
}

// TestOwnLoopProbesMatchExactHessian trains the own loop with asynchronous
// probes and checks each stored λ1 (finite differences of the user's
// gradient) against the exact R-operator λ1 of hessmon's trainer on the same
// weights and probe batch.
func TestOwnLoopProbesMatchExactHessian(t *testing.T) {
	if _, err := data.MNISTDir(); err != nil {
		t.Skip(err)
	}
	c := config{Steps: 120, Every: 40, Hidden: 32, Batch: 64, ProbeBatch: 128, LR: 0.05, Momentum: 0.9, Seed: 2,
		DB: t.TempDir() + "/own.db", Run: "own", Listen: "off", TrainSamples: 6000, recordProbeParams: true}
	res, err := run(context.Background(), c, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Probes == 0 || res.Stats.Probes+res.Stats.Skipped != 3 {
		t.Fatalf("stats %+v: want 3 due probes, finished or skipped", res.Stats)
	}
	st, err := store.Open(c.DB, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	snaps, err := st.Snapshots("own", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != res.Stats.Probes {
		t.Fatalf("%d snapshots for %d probes", len(snaps), res.Stats.Probes)
	}
	batch := probeBatch(res.ProbeX, res.ProbeY)
	for _, s := range snaps {
		if s.Failed() || len(s.Eigenvalues) == 0 || s.LambdaMin == nil || (!s.IsLight() && (s.Trace == nil || s.ESD == nil)) {
			t.Fatalf("step %d: failed or incomplete snapshot: %q %s", s.Step, s.Failure, s.Detail)
		}
		p, ok := res.ProbeParam[s.Step]
		if !ok {
			t.Fatalf("no weights recorded for probed step %d", s.Step)
		}
		op, err := hessian.NewExact(trainerTwin(t, res.Model, p), batch, trainer.CrossEntropy{}, trainer.ModeEval)
		if err != nil {
			t.Fatal(err)
		}
		exact, _, err := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 1, Tol: 1e-10, MaxHVPs: 3000}, nil)
		if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
			t.Fatal(err)
		}
		rel := math.Abs(s.Eigenvalues[0]-exact.Values[0]) / math.Abs(exact.Values[0])
		t.Logf("step %d: λ1 finite differences %.10g, exact R-op %.10g, relative difference %.2g (residual %.1e)",
			s.Step, s.Eigenvalues[0], exact.Values[0], rel, s.Residuals[0])
		if !(rel <= 1e-4) {
			t.Errorf("step %d: λ1 %v vs exact %v: relative difference %g > 1e-4", s.Step, s.Eigenvalues[0], exact.Values[0], rel)
		}
	}
}
