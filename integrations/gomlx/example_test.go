package gomlx_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/losses"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/hessmon/hessmon/estimators"
	hgomlx "github.com/hessmon/hessmon/integrations/gomlx"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
)

func model(ctx *mlctx.Context, _ any, in []*graph.Node) []*graph.Node {
	h := graph.Tanh(layers.DenseWithBias(ctx.In("fc1"), in[0], 4))
	return []*graph.Node{layers.DenseWithBias(ctx.In("fc2"), h, 2)}
}

// batch is four samples of three features, two classes.
func batch() (x, y *tensors.Tensor) {
	return tensors.FromValue([][]float64{{1, 0, -1}, {0.5, 2, 0}, {-1, -1, 1}, {0, 1, 2}}),
		tensors.FromValue([][]int32{{0}, {1}, {1}, {0}})
}

// The Hessian of a GoMLX model's loss as an hvp.Operator: one block per
// variable, exact products, any hessmon estimator on top.
func ExampleNew() {
	backend, err := simplego.New("ops_sequential")
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Finalize()
	ctx := mlctx.New()
	if err := ctx.SetRNGStateFromSeed(1); err != nil {
		log.Fatal(err)
	}
	loss := losses.SparseCategoricalCrossEntropyLogits
	x, y := batch()
	tr := train.NewTrainer(backend, ctx, model, loss, optimizers.StochasticGradientDescent().Done(), nil, nil)
	if _, err := tr.TrainStep(nil, []*tensors.Tensor{x}, []*tensors.Tensor{y}); err != nil { // variables exist after a step
		log.Fatal(err)
	}

	op, err := hgomlx.New(ctx, hgomlx.Config{Model: model, Loss: loss,
		Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	if err != nil {
		log.Fatal(err)
	}
	defer op.Finalize()
	for _, b := range op.Blocks() {
		fmt.Printf("%-16s offset %2d, %2d parameters\n", b.Name, b.Offset, b.Len)
	}
	eig, _, err := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 1, Tol: 1e-10}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("dim %d, λ1 > 0: %v, residual < 1e-8: %v\n", op.Dim(), eig.Values[0] > 0, eig.Residuals[0] < 1e-8)
	// Output:
	// /fc1/dense/weights offset  0, 12 parameters
	// /fc1/dense/biases offset 12,  4 parameters
	// /fc2/dense/weights offset 16,  8 parameters
	// /fc2/dense/biases offset 24,  2 parameters
	// dim 26, λ1 > 0: true, residual < 1e-8: true
}

// Attaching the monitor to a GoMLX train.Loop: probes every 50 global steps,
// asynchronous, on a fixed probe batch; the loop's OnEnd closes the monitor.
func ExampleAttach() {
	backend, err := simplego.New("ops_sequential") // v0.26.0's parallel ops can deadlock
	if err != nil {
		log.Fatal(err)
	}
	defer backend.Finalize()
	ctx := mlctx.New()
	loss := losses.SparseCategoricalCrossEntropyLogits
	loop := train.NewLoop(train.NewTrainer(backend, ctx, model, loss, optimizers.StochasticGradientDescent().Done(), nil, nil))

	probeX, probeY := batch()
	mon, err := monitor.New("my-run", monitor.Config{Every: 50, Async: true} /*, monitor.WithSink(store), monitor.WithSink(exporter) */)
	if err != nil {
		log.Fatal(err)
	}
	_, err = hgomlx.Attach(context.Background(), loop, mon, hgomlx.AttachOptions{
		Config: hgomlx.Config{Model: model, Loss: loss,
			Inputs: []*tensors.Tensor{probeX}, Labels: []*tensors.Tensor{probeY}},
		Optimizer: snapshot.SGD,
	})
	if err != nil {
		log.Fatal(err)
	}
	// loop.RunSteps(dataset, 1000)
}
