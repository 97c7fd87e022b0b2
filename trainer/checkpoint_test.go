package trainer

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/hessmon/hessmon/data"
)

// TestResumeIsBitwise: training 60 steps equals training 25, checkpointing
// (through the binary encoding), and resuming to 60 in a new network,
// optimiser and batcher, bit for bit, for SGD with momentum and for Adam,
// with BatchNorm buffers and batches that cross epochs (100 samples, 16 a
// batch). The losses of every resumed step match too.
func TestResumeIsBitwise(t *testing.T) {
	ds := data.Synthetic(100, Shape{H: 1, W: 1, C: 6}, 3, 1)
	for _, name := range []string{"sgd", "adam"} {
		t.Run(name, func(t *testing.T) {
			setup := func() (*Network, Optimizer) {
				net, err := NewMLP(MLPConfig{Sizes: []int{6, 8, 3}, Activation: Tanh, BN: true}, 2)
				if err != nil {
					t.Fatal(err)
				}
				opt, err := NewOptimizer(name, 0.05, 0.9, 1e-4)
				if err != nil {
					t.Fatal(err)
				}
				return net, opt
			}
			var losses []float64
			record := func(_ context.Context, info StepInfo) error { losses = append(losses, info.Loss); return nil }
			cfg := func(net *Network, opt Optimizer, steps int64) Config {
				return Config{Model: net, Loss: CrossEntropy{}, Optimizer: opt, Data: ds, BatchSize: 16, Steps: steps, Seed: 7,
					Hooks: []Hook{record}}
			}
			netA, optA := setup()
			if _, err := Train(context.Background(), cfg(netA, optA, 60)); err != nil {
				t.Fatal(err)
			}
			lossesA := losses

			losses = nil
			netB, optB := setup()
			var saved [][]byte
			c := cfg(netB, optB, 25)
			c.CheckpointEvery = 10
			c.SaveCheckpoint = func(_ context.Context, cp *Checkpoint) error {
				b, err := cp.MarshalBinary()
				saved = append(saved, b)
				return err
			}
			if _, err := Train(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			if len(saved) != 3 { // after steps 10, 20 and the last, 25
				t.Fatalf("%d checkpoints, want 3", len(saved))
			}
			var cp Checkpoint
			if err := cp.UnmarshalBinary(saved[2]); err != nil || cp.Step != 25 {
				t.Fatalf("checkpoint step %d, %v", cp.Step, err)
			}
			netC, optC := setup() // fresh: the state comes from the checkpoint alone
			c = cfg(netC, optC, 60)
			c.Resume = &cp
			res, err := Train(context.Background(), c)
			if err != nil || res.Steps != 60 {
				t.Fatalf("resumed: %d steps, %v", res.Steps, err)
			}
			if !slices.Equal(lossesA, losses) {
				t.Errorf("losses differ:\n uninterrupted %v\n resumed       %v", lossesA, losses)
			}
			if !slices.Equal(netA.Params(), netC.Params()) || !slices.Equal(netA.Buffers(), netC.Buffers()) {
				t.Error("final weights differ")
			}
			if Checksum(netA) != Checksum(netC) {
				t.Error("checksums differ")
			}
			// The same checkpoint with another seed does not replay.
			netD, optD := setup()
			c = cfg(netD, optD, 60)
			c.Seed, c.Resume = 8, &cp
			if _, err := Train(context.Background(), c); err == nil {
				t.Error("resumed with another seed: no error")
			}
		})
	}
}

// TestCheckpointOnCancel: an interrupted run checkpoints its last finished
// step, so that a SIGTERM loses nothing.
func TestCheckpointOnCancel(t *testing.T) {
	ds := data.Synthetic(64, Shape{H: 1, W: 1, C: 4}, 2, 1)
	net, _ := NewMLP(MLPConfig{Sizes: []int{4, 2}}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var last int64
	_, err := Train(ctx, Config{Model: net, Loss: CrossEntropy{}, Optimizer: &SGD{LR: 0.1, Momentum: 0.9}, Data: ds, BatchSize: 8, Steps: 100,
		CheckpointEvery: 50, SaveCheckpoint: func(_ context.Context, cp *Checkpoint) error { last = cp.Step; return nil },
		Hooks: []Hook{func(_ context.Context, info StepInfo) error {
			if info.Step == 13 {
				cancel()
			}
			return nil
		}}})
	if !errors.Is(err, context.Canceled) || last != 13 {
		t.Errorf("err %v, last checkpoint %d; want context.Canceled and 13", err, last)
	}
}
