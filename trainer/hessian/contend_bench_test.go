package hessian

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/trainer"
)

// BenchmarkTrainBesideHVPs measures what an asynchronous probe costs the
// training loop on this machine: 1,000 SGD steps of the MNIST-shaped MLP
// 784-128-128-10 alone, then again with a goroutine applying HVPs on a probe
// batch of 128 back to back, and reports the ratio (slowdown) and the HVP
// time beside training. On the 2-vCPU VM of round 3 it was 1.28–1.39 with
// OpenBLAS and 0.92–1.03 with HESSMON_BLAS=gonum: the monitor's budget sees
// exactly this cost.
func BenchmarkTrainBesideHVPs(b *testing.B) {
	ds := data.Synthetic(4096, data.Shape{H: 1, W: 1, C: 784}, 10, 1)
	train := func(net *trainer.Network) time.Duration {
		start := time.Now()
		if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: trainer.CrossEntropy{},
			Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9}, Data: ds, BatchSize: 64, Steps: 1000, Seed: 1}); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	newNet := func() *trainer.Network {
		net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{784, 128, 128, 10}, Activation: trainer.Tanh}, 1)
		if err != nil {
			b.Fatal(err)
		}
		return net
	}
	var alone, beside time.Duration
	var hvps int64
	for range b.N {
		alone += train(newNet())
		net := newNet()
		op, err := NewExact(net, trainer.HeadBatch(ds, 128), trainer.CrossEntropy{}, trainer.ModeEval)
		if err != nil {
			b.Fatal(err)
		}
		var stop atomic.Bool
		done := make(chan int64)
		go func() {
			v, dst := make([]float64, op.Dim()), make([]float64, op.Dim())
			for i := range v {
				v[i] = 1e-3
			}
			var n int64
			for !stop.Load() {
				if err := op.Apply(dst, v); err != nil {
					break
				}
				n++
			}
			done <- n
		}()
		beside += train(net)
		stop.Store(true)
		hvps += <-done
	}
	b.ReportMetric(float64(beside)/float64(alone), "slowdown")
	b.ReportMetric(float64(beside.Milliseconds())/float64(max(1, hvps)), "ms/hvp-beside")
}
