package monitor_test

import (
	"context"
	"fmt"
	"math"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
)

// A training loop that is not hessmon's: plain gradient descent on the
// Rosenbrock-like loss L(x, y) = (1−x)² + 10(y−x²)². All the monitor needs
// is the gradient, through hvp.FiniteDiff.
func Example_foreignLoop() {
	grad := func(dst, p []float64) error {
		x, y := p[0], p[1]
		dst[0] = -2*(1-x) - 40*x*(y-x*x)
		dst[1] = 20 * (y - x*x)
		return nil
	}
	m, err := monitor.New("rosenbrock", monitor.Config{Every: 100, TopK: 2, NoESD: true, NoTrace: true})
	if err != nil {
		panic(err)
	}
	p, g := []float64{-1, 1}, make([]float64, 2)
	const lr = 0.01
	for step := int64(1); step <= 300; step++ {
		_ = grad(g, p)
		p[0] -= lr * g[0]
		p[1] -= lr * g[1]
		if m.Due(step) {
			op := hvp.NewFiniteDiff(grad, p)
			s, err := m.Probe(context.Background(), step, op, monitor.Meta{LearningRate: lr, Optimizer: "sgd"})
			if err != nil || s.Failed() {
				panic(fmt.Sprint(err, s.Failure))
			}
			// The exact Hessian at (x, y) is [[2−40y+120x², −40x], [−40x, 20]].
			x, y := p[0], p[1]
			a, b, c := 2-40*y+120*x*x, -40*x, 20.0
			exact := (a+c)/2 + math.Sqrt((a-c)*(a-c)/4+b*b)
			fmt.Printf("step %d: λ1 = %.3f (exact %.3f), λ1/(2/η) = %.3f\n", step, s.Eigenvalues[0], exact, s.SharpnessRatio)
		}
	}
	// Output:
	// step 100: λ1 = 33.611 (exact 33.611), λ1/(2/η) = 0.168
	// step 200: λ1 = 64.488 (exact 64.488), λ1/(2/η) = 0.322
	// step 300: λ1 = 78.935 (exact 78.935), λ1/(2/η) = 0.395
}
