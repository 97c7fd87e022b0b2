package estimators_test

import (
	"context"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
)

// laplacian returns the n×n path-graph Laplacian tridiag(−1, 2, −1), whose
// eigenvalues are 2 − 2cos(kπ/(n+1)), k = 1..n.
func laplacian(n int) *hvp.Dense {
	s := mat.NewSymDense(n, nil)
	for i := 0; i < n; i++ {
		s.SetSym(i, i, 2)
		if i+1 < n {
			s.SetSym(i, i+1, -1)
		}
	}
	return hvp.NewDense(s)
}

func ExampleTopEigen() {
	const n = 50
	op := laplacian(n)
	res, warm, err := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 3, Tol: 1e-10}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i, v := range res.Values {
		exact := 2 - 2*math.Cos(float64(n-i)*math.Pi/(n+1))
		fmt.Printf("λ%d = %.10f (exact %.10f), certified to %v\n", i+1, v, exact, res.Residuals[i] < 1e-9)
	}
	// The next call on a nearby operator starts from these eigenvectors.
	again, _, err := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 3, Tol: 1e-10}, warm)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("warm start:", again.Warm, "cheaper:", again.HVPs < res.HVPs)
	// Output:
	// λ1 = 3.9962066575 (exact 3.9962066575), certified to true
	// λ2 = 3.9848410193 (exact 3.9848410193), certified to true
	// λ3 = 3.9659461994 (exact 3.9659461994), certified to true
	// warm start: true cheaper: true
}

func ExampleTrace() {
	const n = 400
	op := laplacian(n) // trace 800
	blocks := []estimators.Block{{Name: "first", Offset: 0, Len: 100}, {Name: "rest", Offset: 100, Len: 300}}
	res, _, err := estimators.Trace(context.Background(), op, estimators.TraceOptions{RelTol: 0.005, MaxHVPs: 200, Blocks: blocks, Seed: 1}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	lo, hi := res.CI(0.95)
	fmt.Printf("method %s, converged %v, 95%% CI covers 800: %v\n", res.Method, res.Converged, lo <= 800 && 800 <= hi)
	fmt.Printf("relative stderr below 0.5%%: %v\n", res.StdErr <= 0.005*res.Value)
	for _, b := range res.Blocks {
		fmt.Printf("block %s ≈ %.0f\n", b.Name, math.Round(b.Value/50)*50)
	}
	// Output:
	// method hutchinson, converged true, 95% CI covers 800: true
	// relative stderr below 0.5%: true
	// block first ≈ 200
	// block rest ≈ 600
}

func ExampleESD() {
	const n = 200
	op := laplacian(n) // eigenvalues fill [0, 4]; tr(H)/n = 2, tr(H²)/n = 6 − 2/n
	res, _, err := estimators.ESD(context.Background(), op, estimators.ESDOptions{Probes: 8, Steps: 40, Seed: 2}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	mean, se := res.Moments(2)
	fmt.Printf("nodes %d, HVPs %d\n", len(res.Nodes), res.HVPs)
	fmt.Printf("mean eigenvalue within 3 stderr of 2: %v\n", math.Abs(mean[1]-2) < 3*se[1])
	fmt.Printf("second moment within 3 stderr of %.2f: %v\n", 6-2.0/n, math.Abs(mean[2]-(6-2.0/n)) < 3*se[2])
	grid, density, variance := res.Density(estimators.DensityOptions{})
	fmt.Printf("density on %d points, kernel variance %.2e, spanning [%.2f, %.2f]\n", len(density), variance, grid[0], grid[len(grid)-1])
	// Output:
	// nodes 320, HVPs 320
	// mean eigenvalue within 3 stderr of 2: true
	// second moment within 3 stderr of 5.99: true
	// density on 10000 points, kernel variance 4.02e-05, spanning [-0.01, 4.01]
}

// A monitor carries the bundled warm state from probe to probe and can
// persist it between runs.
func ExampleWarm() {
	op := laplacian(100)
	ctx := context.Background()
	var w estimators.Warm
	for step := 0; step < 2; step++ {
		ev, ew, err := estimators.TopEigen(ctx, op, estimators.EigenOptions{K: 2}, w.Eigen)
		if err != nil {
			fmt.Println(err)
			return
		}
		tr, tw, err := estimators.Trace(ctx, op, estimators.TraceOptions{RelTol: -1, MaxHVPs: 20, Seed: uint64(step)}, w.Trace)
		if err != nil {
			fmt.Println(err)
			return
		}
		w.Eigen, w.Trace = ew, tw
		fmt.Printf("step %d: warm eigen %v, trace probes reused %d\n", step, ev.Warm, tr.Reused)
	}
	data, err := w.MarshalBinary()
	if err != nil {
		fmt.Println(err)
		return
	}
	var restored estimators.Warm
	fmt.Println("restored:", restored.UnmarshalBinary(data) == nil)
	// Output:
	// step 0: warm eigen false, trace probes reused 0
	// step 1: warm eigen true, trace probes reused 10
	// restored: true
}
