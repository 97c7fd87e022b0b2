package monitor_test

import (
	"context"
	"fmt"
	"math"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
)

// A training loop that is not hessmon's: plain gradient descent on the
// Rosenbrock-like loss L(x, y) = (1−x)² + 10(y−x²)². All the monitor needs
// is the gradient, through hvp.FiniteDiff, handed to Step as a function
// that is called only when a probe is due.
func Example_foreignLoop() {
	grad := func(dst, p []float64) error {
		x, y := p[0], p[1]
		dst[0] = -2*(1-x) - 40*x*(y-x*x)
		dst[1] = 20 * (y - x*x)
		return nil
	}
	const lr = 0.01
	p, g := []float64{-1, 1}, make([]float64, 2)
	// A sink that prints each snapshot next to the exact λ1 of the
	// Hessian [[2−40y+120x², −40x], [−40x, 20]] at the probed point.
	var probed [][2]float64
	show := monitor.SinkFunc(func(s monitor.Snapshot) error {
		x, y := probed[len(probed)-1][0], probed[len(probed)-1][1]
		a, b, c := 2-40*y+120*x*x, -40*x, 20.0
		exact := (a+c)/2 + math.Sqrt((a-c)*(a-c)/4+b*b)
		fmt.Printf("step %d: λ1 = %.3f (exact %.3f), λ1/(2/η) = %.3f\n", s.Step, s.Eigenvalues[0], exact, s.SharpnessRatio)
		return nil
	})
	ctx := context.Background()
	m, err := monitor.New("rosenbrock", monitor.Config{Every: 100, TopK: 2, NoESD: true, NoTrace: true}, monitor.WithSink(show))
	if err != nil {
		panic(err)
	}
	defer m.Close(ctx)
	for step := int64(1); step <= 300; step++ {
		_ = grad(g, p)
		p[0] -= lr * g[0]
		p[1] -= lr * g[1]
		err := m.Step(ctx, monitor.StepInfo{Step: step, LearningRate: lr, Optimizer: snapshot.SGD}, func() (hvp.Operator, error) {
			probed = append(probed, [2]float64{p[0], p[1]})
			return hvp.NewFiniteDiff(grad, p), nil // copies p: frozen
		})
		if err != nil {
			panic(err)
		}
	}
	// Output:
	// step 100: λ1 = 33.611 (exact 33.611), λ1/(2/η) = 0.168
	// step 200: λ1 = 64.488 (exact 64.488), λ1/(2/η) = 0.322
	// step 300: λ1 = 78.935 (exact 78.935), λ1/(2/η) = 0.395
}
