package gomlx

import (
	"context"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/context/checkpoints"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/store"
)

// TestAttachFollowsRestoredGlobalStep: a GoMLX run restored from its own
// checkpoint continues at the checkpoint's GlobalStep, and so do its
// snapshots in the same store and run: probes every 4 steps over 12
// steps, a restore, 12 more, give snapshots at 4, 8, …, 24 — not a
// refused or shifted restart at step 1 or 13.
func TestAttachFollowsRestoredGlobalStep(t *testing.T) {
	m := testModels()[0]
	dir, db := t.TempDir(), t.TempDir()+"/g.db"
	st, err := store.Open(db, store.Options{NoSync: true})
	must(t, err)
	defer st.Close()
	ds := &cycleDS{inputs: [][]*tensors.Tensor{m.inputs}, labels: [][]*tensors.Tensor{m.labels}}
	session := func() int64 {
		ctx := mlctx.New().Checked(false) // variables restored by the checkpoint are reused
		must(t, ctx.SetRNGStateFromSeed(42))
		ckpt, err := checkpoints.Build(ctx).Dir(dir).Done() // loads the last checkpoint, if any
		must(t, err)
		tr := train.NewTrainer(newBackend(t), ctx, m.model, m.loss,
			optimizers.StochasticGradientDescent().WithLearningRate(0.1).Done(), nil, nil)
		loop := train.NewLoop(tr)
		start := tr.GlobalStep()
		mon, err := monitor.New("g", monitor.Config{Every: 4, TopK: 1, NoTrace: true, NoESD: true}, monitor.WithSink(st))
		must(t, err)
		_, err = Attach(context.Background(), loop, mon, AttachOptions{Config: Config{Model: m.model, Loss: m.loss, Inputs: m.inputs, Labels: m.labels}})
		must(t, err)
		_, err = loop.RunSteps(ds, 12)
		must(t, err)
		must(t, ckpt.Save())
		return start
	}
	if start := session(); start != 0 {
		t.Fatalf("first session starts at GlobalStep %d", start)
	}
	if start := session(); start != 12 {
		t.Fatalf("restored session starts at GlobalStep %d, want 12", start)
	}
	snaps, err := st.Read("g", store.Query{})
	must(t, err)
	var steps []int64
	for _, s := range snaps {
		if s.Failed() {
			t.Errorf("step %d: %s", s.Step, s.Failure)
		}
		steps = append(steps, s.Step)
	}
	if want := []int64{4, 8, 12, 16, 20, 24}; !slices.Equal(steps, want) {
		t.Errorf("snapshot steps %v, want %v", steps, want)
	}
}
