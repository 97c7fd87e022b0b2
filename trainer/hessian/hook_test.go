package hessian

import (
	"context"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"testing"

	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/snapshot"
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
	data := trainer.Synthetic(128, trainer.Shape{H: 1, W: 1, C: 6}, 3, 1)
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.Tanh}, 1)
	sink := &memSink{}
	m, _ := monitor.New("r", monitor.Config{Every: 5, MaxHVPs: 3}, monitor.WithSink(sink), monitor.WithLogger(discardLogger()))
	res, err := trainer.Train(context.Background(), trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.1}, Data: data, BatchSize: 16, Steps: 20,
		Hooks: []trainer.Hook{Hook(m, HookOptions{Batch: data.Head(32)})},
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
	data := trainer.Synthetic(256, trainer.Shape{H: 1, W: 1, C: 8}, 3, 2)
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{8, 6, 3}, Activation: trainer.Tanh}, 2)
	sink := &memSink{}
	m, _ := monitor.New("r", monitor.Config{Every: 2, Async: true, TopK: 2, ESDSteps: 10}, monitor.WithSink(sink), monitor.WithLogger(discardLogger()))
	_, err := trainer.Train(context.Background(), trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.1}, Data: data, BatchSize: 32, Steps: 40,
		Hooks: []trainer.Hook{Hook(m, HookOptions{Batch: data.Head(64)})},
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
	data := trainer.Synthetic(300, trainer.Shape{H: 1, W: 1, C: 10}, 4, 5)
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{10, 12, 4}, Activation: trainer.Tanh}, 3)
	if err != nil {
		t.Fatal(err)
	}
	batch := data.Head(100) // 100 is not a multiple of 3: uneven chunks
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
	if d := rel(a.Trace.Value, s.Trace.Value); d > 1e-9 {
		t.Errorf("trace: async %v, sync %v", a.Trace.Value, s.Trace.Value)
	}
	if d := rel(a.Loss, s.Loss); d > 1e-12 {
		t.Errorf("loss: async %v, sync %v", a.Loss, s.Loss)
	}
}
