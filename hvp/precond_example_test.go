package hvp_test

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
)

// ExampleNewInversePreconditioned computes the preconditioned sharpness
// λ1(P⁻¹H) of an adaptive optimiser from its diagonal preconditioner P
// (trainer.Adam.Preconditioner writes one), through the symmetric
// P^{-1/2}·H·P^{-1/2}.
func ExampleNewInversePreconditioned() {
	h := hvp.NewDense(mat.NewSymDense(2, []float64{4, 1, 1, 2}))
	p := []float64{0.01, 1} // Adam's P is small where gradients are
	op, err := hvp.NewInversePreconditioned(h, p)
	if err != nil {
		fmt.Println(err)
		return
	}
	raw, _, _ := estimators.TopEigen(context.Background(), h, estimators.EigenOptions{K: 1, Seed: 1}, nil)
	pre, _, _ := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 1, Seed: 1}, nil)
	fmt.Printf("λ1(H) = %.4f, λ1(P⁻¹H) = %.4f\n", raw.Values[0], pre.Values[0])
	// Output:
	// λ1(H) = 4.4142, λ1(P⁻¹H) = 400.2511
}

// ExampleNewRestricted takes the diagonal Hessian block of two parameter
// tensors that are not adjacent in the parameter vector.
func ExampleNewRestricted() {
	h := hvp.NewDense(mat.NewSymDense(4, []float64{
		1, 0, 0, 5,
		0, 2, 0, 0,
		0, 0, 3, 0,
		5, 0, 0, 4,
	}))
	b, err := hvp.NewRestricted(h, []hvp.Range{{Offset: 0, Len: 1}, {Offset: 3, Len: 1}})
	if err != nil {
		fmt.Println(err)
		return
	}
	dst := make([]float64, b.Dim())
	_ = b.Apply(dst, []float64{1, 0})
	fmt.Println(b.Dim(), dst)
	// Output:
	// 2 [1 5]
}
