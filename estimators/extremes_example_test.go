package estimators_test

import (
	"context"
	"fmt"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
)

// Extremes finds both ends of a spectrum in one solve; the warm state it
// returns starts the next solve on a nearby operator.
func ExampleExtremes() {
	const n = 50
	h := mat.NewSymDense(n, nil)
	for i := range n {
		h.SetSym(i, i, float64(i)-10) // eigenvalues −10 … 39
		if i > 0 {
			h.SetSym(i-1, i, 0.1)
		}
	}
	ctx := context.Background()
	res, warm, err := estimators.Extremes(ctx, hvp.NewDense(h), estimators.ExtremesOptions{Tol: 1e-8, Seed: 1}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("λ1 %.4f, λmin %.4f, converged %v\n", res.MaxValue, res.MinValue, res.Converged)
	res, _, err = estimators.Extremes(ctx, hvp.NewDense(h), estimators.ExtremesOptions{Tol: 1e-8, Seed: 1}, warm)
	fmt.Printf("warm %v, at most 4 HVPs %v, error %v\n", res.Warm, res.HVPs <= 4, err)
	// Output:
	// λ1 39.0100, λmin -10.0100, converged true
	// warm true, at most 4 HVPs true, error <nil>
}
