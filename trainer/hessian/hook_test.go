package hessian

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"testing"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// memSink records snapshots.
type memSink struct {
	mu    sync.Mutex
	snaps []snapshot.Snapshot
}

func (m *memSink) PutSnapshot(s snapshot.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snaps = append(m.snaps, s)
	return nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHookNeverStopsTraining: a model whose probes fail still trains to the
// end, and every due step produced a (failed) snapshot.
func TestHookNeverStopsTraining(t *testing.T) {
	ds := data.Synthetic(128, trainer.Shape{H: 1, W: 1, C: 6}, 3, 1)
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.Tanh}, 1)
	sink := &memSink{}
	m, _ := monitor.New("r", monitor.Config{Every: 5, MaxHVPs: 3}, monitor.WithSink(sink), monitor.WithLogger(discardLogger()))
	res, err := trainer.Train(context.Background(), trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.1}, Data: ds, BatchSize: 16, Steps: 20,
		Hooks: []trainer.Hook{Hook(m, HookOptions{Batch: trainer.HeadBatch(ds, 32)})},
	})
	if err != nil || res.Steps != 20 {
		t.Fatalf("training stopped: steps %d, err %v", res.Steps, err)
	}
	if len(sink.snaps) != 4 {
		t.Fatalf("%d snapshots, want 4", len(sink.snaps))
	}
	for _, s := range sink.snaps {
		if s.Failure != snapshot.FailBudget {
			t.Errorf("step %d: failure %q, want budget", s.Step, s.Failure)
		}
	}
}

// TestAsyncHook: with Async the hook returns at once, at most one probe is
// in flight, and the probes see the parameters of their own step.
func TestAsyncHook(t *testing.T) {
	ds := data.Synthetic(256, trainer.Shape{H: 1, W: 1, C: 8}, 3, 2)
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{8, 6, 3}, Activation: trainer.Tanh}, 2)
	sink := &memSink{}
	m, _ := monitor.New("r", monitor.Config{Every: 2, Async: true, TopK: 2, ESDSteps: 10}, monitor.WithSink(sink), monitor.WithLogger(discardLogger()))
	_, err := trainer.Train(context.Background(), trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.1}, Data: ds, BatchSize: 32, Steps: 40,
		Hooks: []trainer.Hook{Hook(m, HookOptions{Batch: trainer.HeadBatch(ds, 64)})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := m.Stats()
	if st.Probes+st.Skipped != 20 || st.Probes == 0 {
		t.Errorf("stats %+v: want probes + skipped = 20 due steps", st)
	}
	if len(sink.snaps) != st.Probes {
		t.Errorf("%d snapshots for %d probes", len(sink.snaps), st.Probes)
	}
	for _, s := range sink.snaps {
		if s.Failed() {
			t.Errorf("step %d failed: %s", s.Step, s.Detail)
		}
	}
}

// TestAsyncChunkedProbeMatchesSync: an asynchronous probe splits the batch
// into one chunk per core and runs them one at a time, then all at once
// after Wait; its snapshot must equal a synchronous probe on the whole batch.
func TestAsyncChunkedProbeMatchesSync(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	ds := data.Synthetic(300, trainer.Shape{H: 1, W: 1, C: 10}, 4, 5)
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{10, 12, 4}, Activation: trainer.Tanh}, 3)
	if err != nil {
		t.Fatal(err)
	}
	batch := trainer.HeadBatch(ds, 100) // 100 is not a multiple of 3: uneven chunks
	cfg := monitor.Config{Every: 5, TopK: 3, EigenTol: 1e-9, MaxHVPs: 2000, TraceRelTol: 0.05, ESDSteps: 12}
	info := trainer.StepInfo{Step: 5, Loss: 1, LearningRate: 0.1, Model: net, Optimizer: &trainer.SGD{LR: 0.1}}
	var snaps [2]*memSink
	for i, async := range []bool{false, true} {
		snaps[i] = &memSink{}
		cfg.Async = async
		m, err := monitor.New("r", cfg, monitor.WithSink(snaps[i]), monitor.WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		if err := Hook(m, HookOptions{Batch: batch})(context.Background(), info); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if m.Stats().Probes != 1 || len(snaps[i].snaps) != 1 {
			t.Fatalf("async %v: stats %+v, %d snapshots", async, m.Stats(), len(snaps[i].snaps))
		}
	}
	s, a := snaps[0].snaps[0], snaps[1].snaps[0]
	if s.Failed() || a.Failed() {
		t.Fatalf("failed probes: %q %q", s.Detail, a.Detail)
	}
	rel := func(x, y float64) float64 { return math.Abs(x-y) / math.Max(math.Abs(y), 1e-300) }
	for i := range s.Eigenvalues {
		if d := rel(a.Eigenvalues[i], s.Eigenvalues[i]); d > 1e-9 {
			t.Errorf("λ%d: async %v, sync %v (rel %g)", i+1, a.Eigenvalues[i], s.Eigenvalues[i], d)
		}
	}
	// The trace deflates with the eigen solve's whole basis, whose nearly
	// dependent corrections carry the chunks' rounding differences
	// (1e-16) up to ~1e-8: far below the trace's standard error.
	if d := rel(a.Trace.Value, s.Trace.Value); d > 1e-7 {
		t.Errorf("trace: async %v, sync %v", a.Trace.Value, s.Trace.Value)
	}
	if d := rel(a.Loss, s.Loss); d > 1e-12 {
		t.Errorf("loss: async %v, sync %v", a.Loss, s.Loss)
	}
}

// TestHookProbesTheLoopsOwnLoss: in an MSE loop the hook's probe is the
// Hessian of MSE (round 1 silently probed cross-entropy).
func TestHookProbesTheLoopsOwnLoss(t *testing.T) {
	ds := data.Synthetic(96, trainer.Shape{H: 1, W: 1, C: 5}, 3, 4)
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{5, 6, 3}, Activation: trainer.Tanh}, 4)
	probe := trainer.HeadBatch(ds, 40)
	sink := &memSink{}
	m, _ := monitor.New("r", monitor.Config{Every: 10, TopK: 1, EigenTol: 1e-10, MaxHVPs: 2000, NoTrace: true, NoESD: true},
		monitor.WithSink(sink), monitor.WithLogger(discardLogger()))
	var atProbe *trainer.Network
	keep := func(_ context.Context, info trainer.StepInfo) error {
		if info.Step == 10 {
			atProbe = info.Model.Clone()
		}
		return nil
	}
	if _, err := trainer.Train(context.Background(), trainer.Config{
		Model: net, Loss: oneHotMSE{}, Optimizer: &trainer.SGD{LR: 0.05}, Data: ds, BatchSize: 16, Steps: 10,
		Hooks: []trainer.Hook{keep, Hook(m, HookOptions{Batch: probe})},
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(sink.snaps) != 1 || sink.snaps[0].Failed() {
		t.Fatalf("snapshots %+v", sink.snaps)
	}
	lambda1 := func(loss trainer.Loss) float64 {
		op, err := NewExact(atProbe, probe, loss, trainer.ModeEval)
		if err != nil {
			t.Fatal(err)
		}
		var s snapshot.Snapshot
		if _, _, err := monitor.Analyze(context.Background(), &s, op, monitor.Config{TopK: 1, EigenTol: 1e-10, MaxHVPs: 2000, NoTrace: true, NoESD: true}, monitor.Inputs{}); err != nil {
			t.Fatal(err)
		}
		return s.Eigenvalues[0]
	}
	got, mse, ce := sink.snaps[0].Eigenvalues[0], lambda1(oneHotMSE{}), lambda1(trainer.CrossEntropy{})
	t.Logf("probed λ1 %.10g; MSE Hessian %.10g, cross-entropy Hessian %.10g", got, mse, ce)
	if math.Abs(got-mse) > 1e-8*math.Abs(mse) {
		t.Errorf("probed λ1 %v is not the MSE Hessian's %v", got, mse)
	}
	if math.Abs(mse-ce) < 1e-3*math.Abs(mse) {
		t.Fatalf("the test cannot tell the losses apart: λ1 %v vs %v", mse, ce)
	}
}

// oneHotMSE is trainer.MSE against one-hot targets built from the labels.
type oneHotMSE struct{}

func (oneHotMSE) Name() string { return "mse-onehot" }

func (oneHotMSE) Eval(grad []float64, z *trainer.Tensor, b trainer.Batch) (float64, error) {
	b.Targets = make([]float64, len(z.Data))
	for i, y := range b.Labels {
		b.Targets[i*z.C+y] = 1
	}
	return trainer.MSE{}.Eval(grad, z, b)
}

func (oneHotMSE) HessVec(dst []float64, z *trainer.Tensor, rz []float64, b trainer.Batch) {
	trainer.MSE{}.HessVec(dst, z, rz, b)
}
