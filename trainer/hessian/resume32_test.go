package hessian

import (
	"context"
	"testing"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// memWarm is an in-memory monitor.WarmStore.
type memWarm map[string][]byte

func (m memWarm) PutWarm(run string, b []byte) error { m[run] = append([]byte(nil), b...); return nil }
func (m memWarm) Warm(run string) ([]byte, error)    { return m[run], nil }

// TestResumeWarmHVPs: a monitor resumed from the stored warm state (whose
// eigenvectors are float32) probes the next point in as many HVPs as the
// monitor that kept its float64 state in memory, in both HVP precisions,
// and records the precision in each snapshot.
func TestResumeWarmHVPs(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{20, 16, 16, 5}, Activation: trainer.Tanh}, 4)
	if err != nil {
		t.Fatal(err)
	}
	b := randomBatch(96, 20, 5, 5, 3, 8)
	w1 := net.Clone()
	g := make([]float64, net.Dim())
	tape := net.NewTape()
	for range 5 { // a few SGD steps move the Hessian a little
		if _, err := tape.Grad(g, b, trainer.CrossEntropy{}, trainer.ModeEval); err != nil {
			t.Fatal(err)
		}
		for i := range g {
			net.Params()[i] -= 0.2 * g[i]
		}
	}
	w2 := net
	cfg := monitor.Config{Every: 1, TopK: 3, NoESD: true, NoTrace: true, Seed: 3}
	for _, prec := range []snapshot.Precision{snapshot.Float64, snapshot.Float32} {
		t.Run(string(prec), func(t *testing.T) {
			ctx := context.Background()
			opAt := func(w *trainer.Network) monitor.OperatorFunc {
				return func() (hvp.Operator, error) {
					return NewOperator(w, b, trainer.CrossEntropy{}, trainer.ModeEval, Options{Precision: prec})
				}
			}
			var snaps []snapshot.Snapshot
			sink := monitor.WithSink(monitor.SinkFunc(func(s snapshot.Snapshot) error { snaps = append(snaps, s); return nil }))
			store := memWarm{}
			// Kept in memory: probes at w1 and w2 in one monitor.
			m, err := monitor.New("kept", cfg, sink)
			if err != nil {
				t.Fatal(err)
			}
			for step, w := range []*trainer.Network{w1, w2} {
				if err := m.Step(ctx, monitor.StepInfo{Step: int64(step + 1)}, opAt(w)); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Resumed: a probe at w1, Close (saves), a new monitor probes w2.
			m, err = monitor.New("resumed", cfg, sink, monitor.WithWarmStore(store))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Step(ctx, monitor.StepInfo{Step: 1}, opAt(w1)); err != nil {
				t.Fatal(err)
			}
			if err := m.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if len(store["resumed"]) == 0 {
				t.Fatal("no warm state saved at Close")
			}
			m, err = monitor.New("resumed", cfg, sink, monitor.WithWarmStore(store))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Step(ctx, monitor.StepInfo{Step: 2}, opAt(w2)); err != nil {
				t.Fatal(err)
			}
			if err := m.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if len(snaps) != 4 {
				t.Fatalf("%d snapshots, want 4", len(snaps))
			}
			kept, resumed := snaps[1], snaps[3]
			for _, s := range snaps {
				if want := map[snapshot.Precision]snapshot.Precision{snapshot.Float64: "", snapshot.Float32: snapshot.Float32}[prec]; s.Precision != want {
					t.Errorf("snapshot at step %d records precision %q, want %q", s.Step, s.Precision, want)
				}
			}
			if !kept.Warm || !resumed.Warm {
				t.Fatalf("warm: kept %v, resumed %v; want both warm", kept.Warm, resumed.Warm)
			}
			if kept.HVPs != resumed.HVPs {
				t.Errorf("resumed probe took %d HVPs, the one that kept its state %d", resumed.HVPs, kept.HVPs)
			}
			t.Logf("%s: cold first probe %d HVPs; warm probe after resume %d HVPs, without resume %d; warm state %d bytes",
				prec, snaps[0].HVPs, resumed.HVPs, kept.HVPs, len(store["resumed"]))
		})
	}
}
