package trainer

import (
	"math"
	"testing"
)

// TestAdamPreconditionerByHand checks P_t against a hand computation of two
// Adam steps with β1 = 0.9, β2 = 0.999, ε = 1e-8.
func TestAdamPreconditionerByHand(t *testing.T) {
	o := &Adam{LR: 0.1}
	p := make([]float64, 2)
	if o.Preconditioner(p) {
		t.Fatal("Preconditioner reported one before the first step")
	}
	theta := []float64{1, 2}
	o.Step(theta, []float64{0.5, -0.1})
	// t = 1: v = 0.001·g², v/(1−β2) = g², so P = (1−0.9)·(|g| + ε).
	if !o.Preconditioner(p) {
		t.Fatal("no preconditioner after a step")
	}
	want := []float64{0.1 * (0.5 + 1e-8), 0.1 * (0.1 + 1e-8)}
	for i := range p {
		if math.Abs(p[i]-want[i]) > 1e-15 {
			t.Errorf("t=1: P[%d] = %.17g, want %.17g", i, p[i], want[i])
		}
	}
	o.Step(theta, []float64{-0.3, 0.2})
	// t = 2: v = 0.999·0.001·g1² + 0.001·g2², 1−β2² = 0.001999, 1−β1² = 0.19.
	v0 := 0.999*0.001*0.25 + 0.001*0.09
	v1 := 0.999*0.001*0.01 + 0.001*0.04
	want = []float64{0.19 * (math.Sqrt(v0/0.001999) + 1e-8), 0.19 * (math.Sqrt(v1/0.001999) + 1e-8)}
	o.Preconditioner(p)
	for i := range p {
		if math.Abs(p[i]-want[i]) > 1e-15 {
			t.Errorf("t=2: P[%d] = %.17g, want %.17g", i, p[i], want[i])
		}
	}
	if o.Preconditioner(make([]float64, 3)) {
		t.Error("Preconditioner accepted a destination of the wrong length")
	}
	var _ Preconditioned = o
}

// TestAdamStepIsPreconditioned checks that every Adam step is
// θ ← θ − η·P_t⁻¹·m_t with P_t from Preconditioner and the raw first moment,
// including weight decay and a zero gradient coordinate (P = (1−β1^t)·ε).
func TestAdamStepIsPreconditioned(t *testing.T) {
	o := &Adam{LR: 0.01, B1: 0.8, B2: 0.99, Eps: 1e-6, WeightDecay: 0.1}
	theta := []float64{0.3, -1, 2, 0}
	p := make([]float64, len(theta))
	for step := 1; step <= 5; step++ {
		g := []float64{math.Sin(float64(step)), 0.01 * float64(step), -2, 0}
		before := append([]float64(nil), theta...)
		o.Step(theta, g)
		if !o.Preconditioner(p) || o.Steps() != step {
			t.Fatalf("step %d: no preconditioner", step)
		}
		for i := range theta {
			want := before[i] - o.LR*o.m[i]/p[i]
			if math.Abs(theta[i]-want) > 1e-15*math.Max(1, math.Abs(want)) {
				t.Errorf("step %d: θ[%d] = %.17g, θ − η·P⁻¹·m = %.17g", step, i, theta[i], want)
			}
		}
	}
}
