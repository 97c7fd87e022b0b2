package hessian_test

import (
	"fmt"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// The exact Hessian-vector product of a model's loss on a fixed batch,
// checked against central differences of the gradient.
func ExampleNewExact() {
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{4, 6, 3}, Activation: trainer.Tanh}, 1)
	batch := trainer.HeadBatch(data.Synthetic(16, net.InShape(), 3, 2), 0)
	op, err := hessian.NewExact(net, batch, trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		panic(err)
	}
	v := make([]float64, op.Dim())
	for i := range v {
		v[i] = 1 / float64(i+1)
	}
	exact := make([]float64, op.Dim())
	_ = op.Apply(exact, v)

	grad := func(dst, x []float64) error {
		w := net.Clone()
		copy(w.Params(), x)
		_, err := w.NewTape().Grad(dst, batch, trainer.CrossEntropy{}, trainer.ModeEval)
		return err
	}
	fd := make([]float64, op.Dim())
	_ = hvp.NewFiniteDiff(grad, net.Params()).Apply(fd, v)
	rel := floats.Distance(exact, fd, 2) / floats.Norm(exact, 2)
	fmt.Printf("%d parameters; finite differences agree to better than 1e-7: %v\n", op.Dim(), rel < 1e-7)
	// Output: 51 parameters; finite differences agree to better than 1e-7: true
}
