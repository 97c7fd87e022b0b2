package hessian

import (
	"context"
	"log/slog"
	"runtime"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// HookOptions configure the trainer hook.
type HookOptions struct {
	// Batch is the fixed probe batch: the same samples at every probe, so
	// that snapshots are comparable over time.
	Batch trainer.Batch
	// Loss overrides the loss of the probed Hessian. By default it is the
	// training loop's own (StepInfo.LossFn), so that an MSE loop is probed
	// on MSE.
	Loss trainer.Loss
	// Mode is the BatchNorm mode of the probed Hessian: trainer.ModeEval
	// (running statistics, PyHessian's choice, the default) or
	// trainer.ModeTrain.
	Mode trainer.Mode
	// Precision of the probes' HVPs: float64 (the default) or float32
	// (MLPs only; see Exact32). Each snapshot records it.
	Precision snapshot.Precision
	// Logger receives the errors Step returns (default slog.Default()); the
	// hook never stops training for them.
	Logger *slog.Logger
}

// Hook returns a trainer.Hook that drives mon: every step goes to
// mon.Step, and a due probe gets the exact Hessian of the loss on
// opt.Batch at a frozen copy of the weights. The hook never returns an
// error: probe failures are snapshots and sink errors are logged, so the
// training loop always goes on. Call mon.Close after training.
//
// An asynchronous probe in eval mode splits the batch into one chunk per
// core (the Hessian of the mean loss is the size-weighted mean of the
// chunks' Hessians); the monitor applies them one at a time while training
// runs, so the probe keeps to one core, and all at once when Close waits
// for the last probe. In train mode BatchNorm's batch statistics couple the
// samples, so the batch stays whole.
func Hook(mon *monitor.Monitor, opt HookOptions) trainer.Hook {
	log := opt.Logger
	if log == nil {
		log = slog.Default()
	}
	var blocks []estimators.Block
	async := mon.Config().Async
	return func(ctx context.Context, info trainer.StepInfo) error {
		if blocks == nil {
			blocks = Blocks(info.Model)
		}
		si := StepInfo(info)
		si.Blocks = blocks
		if p, ok := info.Optimizer.(trainer.Preconditioned); ok && mon.Due(info.Step) {
			// A fresh slice: an asynchronous probe keeps it.
			d := make([]float64, info.Model.Dim())
			if p.Preconditioner(d) {
				si.Preconditioner = d
			}
		}
		loss := opt.Loss
		if loss == nil {
			loss = info.LossFn
		}
		if loss == nil {
			loss = trainer.CrossEntropy{}
		}
		err := mon.Step(ctx, si, func() (hvp.Operator, error) {
			return probeOperator(info.Model, opt.Batch, loss, opt.Mode, async, opt.Precision)
		})
		if err != nil && ctx.Err() == nil {
			log.Error("monitor step", "run", mon.Run(), "step", info.Step, "err", err)
		}
		return nil
	}
}

// StepInfo converts a trainer step to the monitor's view of it.
func StepInfo(info trainer.StepInfo) monitor.StepInfo {
	si := monitor.StepInfo{Step: info.Step, Loss: info.Loss, LearningRate: info.LearningRate}
	if info.Optimizer != nil {
		si.Optimizer, si.Beta1 = snapshot.Optimizer(info.Optimizer.Name()), info.Optimizer.Beta1()
	}
	return si
}

// probeOperator freezes net and builds the probe's exact operator: one
// chunk per core for an asynchronous eval-mode probe, the whole batch
// otherwise.
func probeOperator(net *trainer.Network, b trainer.Batch, loss trainer.Loss, mode trainer.Mode, async bool, prec snapshot.Precision) (hvp.Operator, error) {
	opt := Options{Precision: prec}
	if parts := runtime.GOMAXPROCS(0); async && (mode == trainer.ModeEval || !hasBatchNorm(net)) {
		opt.Parts = parts
	}
	return NewOperator(net, b, loss, mode, opt)
}
