package trainer

import (
	"fmt"
	"testing"

	"github.com/hessmon/hessmon/data"
)

func benchMLP(tb testing.TB, batch int) (*Tape, Batch, []float64, []float64) {
	tb.Helper()
	net, err := NewMLP(MLPConfig{Sizes: []int{784, 128, 128, 10}, Activation: Tanh}, 1)
	if err != nil {
		tb.Fatal(err)
	}
	b := HeadBatch(data.Synthetic(batch, Shape{H: 1, W: 1, C: 784}, 10, 2), batch)
	tape := net.NewTape()
	if _, err := tape.Forward(b, CrossEntropy{}, ModeEval); err != nil {
		tb.Fatal(err)
	}
	v, hv := make([]float64, net.Dim()), make([]float64, net.Dim())
	for i := range v {
		v[i] = float64((i*7919)%13) - 6
	}
	return tape, b, v, hv
}

// BenchmarkHVP times one exact HVP (cached forward) and one gradient of the
// 784-128-128-10 tanh MLP; run with -cpuprofile to see where the R-op's
// time goes besides the GEMMs.
func BenchmarkHVP(b *testing.B) {
	b.Logf("BLAS: %v", BLAS())
	for _, batch := range []int{128, 1000} {
		tape, bt, v, hv := benchMLP(b, batch)
		b.Run(fmt.Sprintf("hvp/batch=%d", batch), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := tape.HVP(hv, v); err != nil {
					b.Fatal(err)
				}
			}
		})
		g := make([]float64, len(v))
		b.Run(fmt.Sprintf("grad/batch=%d", batch), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tape.Grad(g, bt, CrossEntropy{}, ModeEval); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTrainStep times SGD steps of the benchmark MLP at batch 64, as
// hessmon train runs them (profile it to see the training loop's split
// between GEMMs and the rest).
func BenchmarkTrainStep(b *testing.B) {
	net, err := NewMLP(MLPConfig{Sizes: []int{784, 128, 128, 10}, Activation: Tanh}, 1)
	if err != nil {
		b.Fatal(err)
	}
	ds := data.Synthetic(6400, Shape{H: 1, W: 1, C: 784}, 10, 2)
	b.ResetTimer()
	if _, err := Train(b.Context(), Config{Model: net, Loss: CrossEntropy{}, Optimizer: &SGD{LR: 0.01, Momentum: 0.9},
		Data: ds, BatchSize: 64, Steps: int64(b.N), Seed: 1}); err != nil {
		b.Fatal(err)
	}
}
