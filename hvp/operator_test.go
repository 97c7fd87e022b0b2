package hvp

import (
	"math"
	"testing"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/trainer"
)

// TestExactBatchesEqualsWholeBatch: the size-weighted mean of batch Hessians
// equals the Hessian of the whole batch (eval-mode BN makes the loss a plain
// per-sample mean), up to rounding.
func TestExactBatchesEqualsWholeBatch(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{7, 9, 4}, Activation: trainer.GELU, BN: true}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := trainer.Synthetic(50, net.InShape(), 4, 2)
	whole, err := NewExact(net, d.Head(0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := d.Subset(0, 13)
	b, _ := d.Subset(13, 50)
	parts, err := NewExactBatches(net, []trainer.Batch{a.Head(0), b.Head(0)}, trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(parts.Loss()-whole.Loss()) > 1e-14 {
		t.Errorf("losses differ: %v vs %v", parts.Loss(), whole.Loss())
	}
	v := make([]float64, whole.Dim())
	for i := range v {
		v[i] = math.Sin(float64(i))
	}
	h1, h2 := make([]float64, len(v)), make([]float64, len(v))
	if err := whole.Apply(h1, v); err != nil {
		t.Fatal(err)
	}
	if err := parts.Apply(h2, v); err != nil {
		t.Fatal(err)
	}
	if d := floats.Distance(h1, h2, math.Inf(1)) / floats.Norm(h1, math.Inf(1)); d > 1e-13 {
		t.Errorf("batched HVP differs from whole-batch HVP by %g relative", d)
	}
}

// TestExactIsFrozen: training the source network after NewExact does not
// change the operator; Refresh moves it.
func TestExactIsFrozen(t *testing.T) {
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{5, 4, 3}, Activation: trainer.Tanh}, 3)
	batch := trainer.Synthetic(20, net.InShape(), 3, 4).Head(0)
	op, _ := NewExact(net, batch, trainer.CrossEntropy{}, trainer.ModeEval)
	v := make([]float64, op.Dim())
	v[0], v[5] = 1, -2
	h1, h2 := make([]float64, len(v)), make([]float64, len(v))
	_ = op.Apply(h1, v)
	for i := range net.Params() {
		net.Params()[i] *= 1.5
	}
	_ = op.Apply(h2, v)
	if !floats.Equal(h1, h2) {
		t.Error("operator changed when the source network moved")
	}
	if err := op.Refresh(net); err != nil {
		t.Fatal(err)
	}
	_ = op.Apply(h2, v)
	if floats.Equal(h1, h2) {
		t.Error("Refresh did not move the operator")
	}
}

func TestFiniteDiffOnQuadratic(t *testing.T) {
	// L = ½ xᵀAx has gradient Ax: the central difference is exact up to rounding.
	a := mat.NewSymDense(3, []float64{4, 1, 0, 1, 3, -1, 0, -1, 2})
	grad := func(dst, x []float64) error {
		mat.NewVecDense(3, dst).MulVec(a, mat.NewVecDense(3, x))
		return nil
	}
	fd := NewFiniteDiff(grad, []float64{1, 2, 3})
	if h := fd.StepSize(); h < 1e-6 || h > 1e-4 {
		t.Errorf("step %g outside the ε^(1/3)·scale rule's range", h)
	}
	dst := make([]float64, 3)
	if err := fd.Apply(dst, []float64{1, -1, 2}); err != nil {
		t.Fatal(err)
	}
	want := []float64{3, -4, 5}
	if !floats.EqualApprox(dst, want, 1e-9) {
		t.Errorf("FiniteDiff = %v, want %v", dst, want)
	}
	if err := fd.Apply(dst[:2], []float64{1, 2, 3}); err == nil {
		t.Error("wrong length accepted")
	}
}

func TestMeanValidation(t *testing.T) {
	d2 := NewDense(mat.NewSymDense(2, []float64{1, 0, 0, 1}))
	d3 := NewDense(mat.NewSymDense(3, nil))
	if _, err := NewMean(nil, nil); err == nil {
		t.Error("empty Mean accepted")
	}
	if _, err := NewMean([]Operator{d2, d3}, nil); err == nil {
		t.Error("mismatched dims accepted")
	}
	if _, err := NewMean([]Operator{d2}, []float64{-1}); err == nil {
		t.Error("negative weight accepted")
	}
	m, err := NewMean([]Operator{d2, NewDense(mat.NewSymDense(2, []float64{3, 0, 0, 3}))}, []float64{1, 3})
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float64, 2)
	_ = m.Apply(dst, []float64{1, 1})
	if !floats.EqualApprox(dst, []float64{2.5, 2.5}, 1e-15) {
		t.Errorf("weighted mean = %v, want 2.5", dst)
	}
}

// TestMeanWorkers checks that the result does not depend on how many
// operators run at once, including a change of SetWorkers between calls.
func TestMeanWorkers(t *testing.T) {
	const n = 7
	var ops []Operator
	var want [n]float64
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(i) - 2.5
	}
	for k := range 5 {
		d := make([]float64, n*n)
		for i := range n {
			for j := range n {
				d[i*n+j] = float64((i+1)*(j+1)%(k+3)) + float64(k)
			}
		}
		s := mat.NewSymDense(n, d)
		ops = append(ops, NewDense(s))
		var hv mat.VecDense
		hv.MulVec(s, mat.NewVecDense(n, v))
		for i := range want {
			want[i] += hv.AtVec(i) * float64(k+1) / 15
		}
	}
	m, err := NewMean(ops, []float64{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	var first []float64
	for _, w := range []int{1, 0, 2, 5, 1, 9} {
		m.SetWorkers(w)
		dst := make([]float64, n)
		if err := m.Apply(dst, v); err != nil {
			t.Fatal(err)
		}
		if !floats.EqualApprox(dst, want[:], 1e-12) {
			t.Fatalf("workers %d: %v, want %v", w, dst, want)
		}
		if first == nil {
			first = dst
		} else if !floats.Equal(dst, first) {
			t.Fatalf("workers %d: %v differs from workers 1: %v", w, dst, first)
		}
	}
}
