// Command mnist-mlp trains the MLP 784-128-128-10 for one epoch of MNIST with
// SGD and prints its test accuracy (issue A's ≥ 95% check), then the top
// Hessian eigenvalue of the trained model on 1,000 training images.
//
//	go run ./examples/mnist-mlp
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

func main() {
	ctx := context.Background()
	train, test, err := data.LoadMNIST("")
	if err != nil {
		log.Fatal(err)
	}
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{784, 128, 128, 10}, Activation: trainer.ReLU}, 1)
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	const batch = 32
	if _, err := trainer.Train(ctx, trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
		Data: train.Flat(), BatchSize: batch, Steps: int64(train.Len() / batch), Seed: 1,
	}); err != nil {
		log.Fatal(err)
	}
	acc, err := trainer.Accuracy(net, test)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: one epoch in %.1fs, test accuracy %.4f\n", net, time.Since(start).Seconds(), acc)

	op, err := hessian.NewExact(net, trainer.HeadBatch(train.Flat(), 1000), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		log.Fatal(err)
	}
	res, _, err := estimators.TopEigen(ctx, op, estimators.EigenOptions{K: 1, Tol: 1e-8}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("λ1 = %.6g (residual %.1e, %d HVPs)\n", res.Values[0], res.Residuals[0], res.HVPs)
}
