package hessian_test

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// float32 HVPs of an MLP beside float64 ones on the same weights and
// batch: the operator says its precision (the monitor records it), and
// H·v agrees to float32 rounding.
func ExampleNewOperator() {
	net, _ := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{8, 16, 3}, Activation: trainer.GELU}, 1)
	x := trainer.NewTensor(32, net.InShape())
	batch := trainer.Batch{X: x}
	for i := range x.Data {
		x.Data[i] = math.Sin(float64(i))
	}
	for i := range 32 {
		batch.Labels = append(batch.Labels, i%3)
	}
	loss := trainer.CrossEntropy{}
	op64, err := hessian.NewOperator(net, batch, loss, trainer.ModeEval, hessian.Options{})
	if err != nil {
		panic(err)
	}
	op32, err := hessian.NewOperator(net, batch, loss, trainer.ModeEval, hessian.Options{Precision: snapshot.Float32})
	if err != nil {
		panic(err)
	}
	v := make([]float64, op64.Dim())
	for i := range v {
		v[i] = math.Cos(float64(i))
	}
	h64, h32 := make([]float64, len(v)), make([]float64, len(v))
	_ = op64.Apply(h64, v)
	_ = op32.Apply(h32, v)
	p := op32.(interface{ Precision() snapshot.Precision }).Precision()
	rel := floats.Distance(h32, h64, 2) / floats.Norm(h64, 2)
	fmt.Printf("%s H·v agrees with float64 to better than 1e-6: %v\n", p, rel < 1e-6)
	// Output: float32 H·v agrees with float64 to better than 1e-6: true
}
