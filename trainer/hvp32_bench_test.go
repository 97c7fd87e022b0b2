package trainer

import (
	"math/rand/v2"
	"testing"
)

// benchMLPBatch is the 784-128-128-10 tanh MLP with a random batch whose
// first 150 features are zero (MNIST's border pixels, roughly).
func benchMLPBatch(b *testing.B, n int) (*Network, Batch) {
	net, err := NewMLP(MLPConfig{Sizes: []int{784, 128, 128, 10}, Activation: Tanh}, 1)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	x := NewTensor(n, Shape{H: 1, W: 1, C: 784})
	for i := range x.Data {
		if i%784 >= 150 {
			x.Data[i] = rng.Float64()
		}
	}
	bt := Batch{X: x}
	for range n {
		bt.Labels = append(bt.Labels, rng.IntN(10))
	}
	return net, bt
}

// BenchmarkHVPPrecision: float64 and float32 HVPs of the same model and
// batch; compare the two in one run (ratios, not absolute times).
func BenchmarkHVPPrecision(b *testing.B) {
	for _, n := range []int{128, 1000} {
		net, bt := benchMLPBatch(b, n)
		v := make([]float64, net.Dim())
		for i := range v {
			v[i] = float64(i%13) - 6
		}
		hv := make([]float64, net.Dim())
		b.Run("float64/batch="+itoa(n), func(b *testing.B) {
			t := net.NewTape()
			if _, err := t.Forward(bt, CrossEntropy{}, ModeEval); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := t.HVP(hv, v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("float32/batch="+itoa(n), func(b *testing.B) {
			m, err := NewNetwork32(net)
			if err != nil {
				b.Fatal(err)
			}
			t := m.NewTape32()
			if _, err := t.Forward(bt, CrossEntropy{}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if err := t.HVP(hv, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func itoa(n int) string { return joinInts([]int{n}, "") }
