package hessian

import (
	"math"
	"testing"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
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
	d := data.Synthetic(50, net.InShape(), 4, 2)
	whole, err := NewExact(net, trainer.HeadBatch(d, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := d.Subset(0, 13)
	b, _ := d.Subset(13, 50)
	parts, err := NewExactBatches(net, []trainer.Batch{trainer.HeadBatch(a, 0), trainer.HeadBatch(b, 0)}, trainer.CrossEntropy{}, trainer.ModeEval)
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
	batch := trainer.HeadBatch(data.Synthetic(20, net.InShape(), 3, 4), 0)
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

// TestConstructorsReturnANilInterfaceOnError: on a batch whose shape does
// not fit the model, NewChunked (one chunk and many) and the hook's probe
// operator (whole batch and split) fail with an operator that is nil in the
// interface sense, not a nil *Exact or *ExactBatches inside a non-nil
// hvp.Operator that a caller's op != nil check lets through.
func TestConstructorsReturnANilInterfaceOnError(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	bad := trainer.HeadBatch(data.Synthetic(40, trainer.Shape{H: 1, W: 1, C: 4}, 3, 1), 0) // 4 features for 6 inputs
	cases := []struct {
		name  string
		build func() (hvp.Operator, error)
	}{
		{"NewChunked/one-chunk", func() (hvp.Operator, error) {
			return NewChunked(net, bad, trainer.CrossEntropy{}, trainer.ModeEval, 100)
		}},
		{"NewChunked/chunks", func() (hvp.Operator, error) {
			return NewChunked(net, bad, trainer.CrossEntropy{}, trainer.ModeEval, 7)
		}},
		{"probeOperator/whole", func() (hvp.Operator, error) {
			return probeOperator(net, bad, trainer.CrossEntropy{}, trainer.ModeEval, false, "")
		}},
		{"probeOperator/split", func() (hvp.Operator, error) {
			return probeOperator(net, bad, trainer.CrossEntropy{}, trainer.ModeEval, true, "")
		}},
	}
	for _, c := range cases {
		op, err := c.build()
		if err == nil {
			t.Errorf("%s: no error for a 4-feature batch on a 6-input model", c.name)
		}
		if op != nil {
			t.Errorf("%s: operator %#v is a typed nil inside a non-nil hvp.Operator", c.name, op)
		}
	}
}
