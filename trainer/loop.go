package trainer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/hessmon/hessmon/data"
)

// StepInfo is what a hook sees after each optimiser step.
type StepInfo struct {
	Step         int64 // 1-based count of optimiser steps taken
	Epoch        int
	Loss         float64 // mini-batch loss before the step
	LearningRate float64
	Optimizer    Optimizer
	Model        *Network
	Batch        Batch
	LossFn       Loss // the loss function, so hooks can build Hessian operators
	Elapsed      time.Duration
}

// Hook is called after every step. Returning an error stops training; the
// monitor's hook never does, so a failing probe cannot stop a run.
type Hook func(ctx context.Context, info StepInfo) error

// Config describes a training run.
type Config struct {
	Model     *Network
	Loss      Loss
	Optimizer Optimizer
	Data      *data.Dataset
	BatchSize int   // ≤ 0: full batch (gradient descent)
	Steps     int64 // number of optimiser steps
	Seed      uint64
	// BNMode is how BatchNorm behaves during training; the default
	// TrainUpdate uses batch statistics and updates the running ones.
	BNMode Mode
	Hooks  []Hook

	// Resume continues a run from its checkpoint: the weights, buffers,
	// optimiser state and data order are restored and training goes on
	// with step Resume.Step+1, bitwise as if it had never stopped. The
	// model, optimiser, data, batch size and seed must be the run's own.
	Resume *Checkpoint
	// CheckpointEvery > 0 hands SaveCheckpoint a checkpoint after every
	// CheckpointEvery-th step, after the last step, and after the last
	// finished step when ctx is cancelled (SIGINT/SIGTERM): a run killed
	// outright resumes from its last checkpoint. Each costs a copy of the
	// weights and the optimiser state.
	CheckpointEvery int64
	SaveCheckpoint  CheckpointSaver
}

// Result summarises a run.
type Result struct {
	Steps    int64
	Epochs   int
	LastLoss float64
	Elapsed  time.Duration
}

// ErrDiverged is returned when the loss becomes NaN or infinite.
var ErrDiverged = errors.New("trainer: loss diverged")

// Train runs cfg.Steps optimiser steps, calling the hooks after each one.
// It stops early, returning ctx.Err(), when ctx is cancelled.
func Train(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Model == nil || cfg.Loss == nil || cfg.Optimizer == nil || cfg.Data == nil {
		return Result{}, errors.New("trainer: Config needs Model, Loss, Optimizer and Data")
	}
	if cfg.Data.Shape != cfg.Model.InShape() {
		if cfg.Data.Shape.Size() == cfg.Model.InShape().Size() && cfg.Model.InShape().H == 1 {
			cfg.Data = cfg.Data.Flat()
		} else {
			return Result{}, fmt.Errorf("trainer: data shape %v does not fit model input %v", cfg.Data.Shape, cfg.Model.InShape())
		}
	}
	mode := cfg.BNMode
	if mode == ModeEval {
		mode = ModeTrainUpdate
	}
	batches := NewBatcher(cfg.Data, cfg.BatchSize, cfg.Seed)
	ck := &checkpointer{cfg: &cfg, b: batches}
	if cfg.CheckpointEvery > 0 && cfg.SaveCheckpoint == nil {
		return Result{}, errNoSaver
	}
	first := int64(1)
	if cfg.Resume != nil {
		if cfg.Resume.Step > cfg.Steps {
			return Result{}, fmt.Errorf("trainer: resuming after step %d of a run of %d steps", cfg.Resume.Step, cfg.Steps)
		}
		if err := restoreCheckpoint(&cfg, batches, cfg.Resume); err != nil {
			return Result{}, err
		}
		first, ck.last = cfg.Resume.Step+1, cfg.Resume.Step
	}
	tape := cfg.Model.NewTape()
	grad := make([]float64, cfg.Model.Dim())
	start := time.Now()
	res := Result{Steps: first - 1}
	for step := first; step <= cfg.Steps; step++ {
		if err := ctx.Err(); err != nil {
			res.Elapsed = time.Since(start)
			return res, errors.Join(err, ck.after(ctx, res.Steps, true))
		}
		b, epoch := batches.Next()
		loss, err := tape.Grad(grad, b, cfg.Loss, mode)
		if err != nil {
			return res, fmt.Errorf("trainer: step %d: %w", step, err)
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return res, fmt.Errorf("%w at step %d (loss %g)", ErrDiverged, step, loss)
		}
		cfg.Optimizer.Step(cfg.Model.Params(), grad)
		res.Steps, res.Epochs, res.LastLoss = step, epoch, loss
		info := StepInfo{Step: step, Epoch: epoch, Loss: loss, LearningRate: cfg.Optimizer.LearningRate(),
			Optimizer: cfg.Optimizer, Model: cfg.Model, Batch: b, LossFn: cfg.Loss, Elapsed: time.Since(start)}
		for _, h := range cfg.Hooks {
			if err := h(ctx, info); err != nil {
				res.Elapsed = time.Since(start)
				return res, fmt.Errorf("trainer: hook at step %d: %w", step, err)
			}
		}
		if err := ck.after(ctx, step, false); err != nil {
			res.Elapsed = time.Since(start)
			return res, err
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// Accuracy is the fraction of d classified correctly (Eval mode), computed
// in chunks to bound memory.
func Accuracy(net *Network, d *data.Dataset) (float64, error) {
	if d.Shape != net.InShape() {
		d = d.Flat()
	}
	tape := net.NewTape()
	correct := 0
	var pred []int
	for from := 0; from < d.Len(); from += 1000 {
		to := min(from+1000, d.Len())
		sub, err := d.Subset(from, to)
		if err != nil {
			return 0, err
		}
		b := HeadBatch(sub, 0)
		pred, err = tape.Predict(pred, b.X)
		if err != nil {
			return 0, err
		}
		for i, p := range pred {
			if p == b.Labels[i] {
				correct++
			}
		}
	}
	return float64(correct) / float64(d.Len()), nil
}
