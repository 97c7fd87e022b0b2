package monitor

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
)

// TrainingObserver receives every training step's loss and learning rate,
// so that dashboards show them between probes. The Prometheus exporter
// implements it.
type TrainingObserver interface {
	ObserveTraining(run string, step int64, loss, lr float64)
}

// HookOptions configure the ready-made trainer hook.
type HookOptions struct {
	// Batch is the fixed probe batch: the same samples at every probe, so
	// that snapshots are comparable over time.
	Batch trainer.Batch
	// Loss is the training loss (default cross-entropy).
	Loss trainer.Loss
	// Mode is the BatchNorm mode of the probed Hessian: trainer.ModeEval
	// (running statistics, PyHessian's choice, the default) or
	// trainer.ModeTrain.
	Mode trainer.Mode
	// Observer, when set, sees every step's loss and learning rate.
	Observer TrainingObserver
	// OnSnapshot is called after each probe (from the probe's goroutine
	// when Async).
	OnSnapshot func(s Snapshot)
}

// Blocks returns one trace block per parameter tensor of net.
func Blocks(net *trainer.Network) []estimators.Block {
	info := net.ParamInfo()
	b := make([]estimators.Block, len(info))
	for i, p := range info {
		b[i] = estimators.Block{Name: p.Name, Offset: p.Offset, Len: p.Len}
	}
	return b
}

// Hook returns a trainer.Hook that probes the Hessian of the loss on
// opt.Batch whenever a probe is due. The hook never returns an error: probe
// failures are recorded as snapshots and sink errors are logged, so the
// training loop always goes on.
func (m *Monitor) Hook(opt HookOptions) trainer.Hook {
	if opt.Loss == nil {
		opt.Loss = trainer.CrossEntropy{}
	}
	var blocks []estimators.Block
	last := time.Now()
	return func(ctx context.Context, info trainer.StepInfo) error {
		now := time.Now()
		m.ObserveTraining(now.Sub(last))
		if opt.Observer != nil {
			opt.Observer.ObserveTraining(m.run, info.Step, info.Loss, info.LearningRate)
		}
		defer func() { last = time.Now() }()
		if !m.Due(info.Step) {
			return nil
		}
		if blocks == nil {
			blocks = Blocks(info.Model)
		}
		meta := Meta{Loss: info.Loss, LearningRate: info.LearningRate, Blocks: blocks}
		if info.Optimizer != nil {
			meta.Optimizer, meta.Beta1 = info.Optimizer.Name(), info.Optimizer.Beta1()
		}
		if m.cfg.Async {
			m.mu.Lock()
			busy := m.inFlight
			if !busy {
				m.inFlight = true
				m.lastProbe = info.Step
			}
			m.mu.Unlock()
			if busy {
				// Skip this scheduled probe; the next one is due an
				// interval later.
				m.mu.Lock()
				m.stats.Skipped++
				m.lastProbe = info.Step
				m.mu.Unlock()
				return nil
			}
			frozen := info.Model.Clone()
			m.wg.Add(1)
			go func() {
				lowerPriority()
				defer m.wg.Done()
				defer func() {
					m.mu.Lock()
					m.inFlight = false
					m.mu.Unlock()
				}()
				m.probeModel(context.WithoutCancel(ctx), info.Step, frozen, opt, meta, true)
			}()
			return nil
		}
		m.probeModel(ctx, info.Step, info.Model, opt, meta, false)
		return nil
	}
}

// probeModel builds the exact operator and probes it; errors are logged.
//
// An asynchronous probe in eval mode splits the batch into one chunk per
// core (the Hessian of the mean loss is the size-weighted mean of the
// chunks' Hessians) and applies them one at a time while training runs, so
// it keeps to one core; once Wait signals that training is over, the chunks
// run concurrently and the last probe finishes sooner. In train mode
// BatchNorm's batch statistics couple the samples, so the batch stays whole.
func (m *Monitor) probeModel(ctx context.Context, step int64, net *trainer.Network, opt HookOptions, meta Meta, async bool) {
	var op hvp.Operator
	var err error
	parts := runtime.GOMAXPROCS(0)
	if async && opt.Mode == trainer.ModeEval && parts > 1 && opt.Batch.Len() >= 2*parts {
		var mean *hvp.ExactBatches
		mean, err = hvp.NewExactBatches(net, splitBatch(opt.Batch, parts), opt.Loss, opt.Mode)
		if err == nil {
			op, meta.Loss = mean, mean.Loss()
			m.setTailOp(mean.Mean)
			defer m.setTailOp(nil)
		}
	} else {
		var exact *hvp.Exact
		exact, err = hvp.NewExact(net, opt.Batch, opt.Loss, opt.Mode)
		if err == nil {
			op, meta.Loss = exact, exact.Loss()
		}
	}
	if err != nil {
		op = failingOperator{dim: net.Dim(), err: fmt.Errorf("building the HVP operator: %w", err)}
	}
	s, err := m.Probe(ctx, step, op, meta)
	if err != nil {
		m.log.Error("recording probe", "run", m.run, "step", step, "err", err)
	}
	if opt.OnSnapshot != nil {
		opt.OnSnapshot(s)
	}
}

// failingOperator turns a construction error into a recorded probe failure.
type failingOperator struct {
	dim int
	err error
}

func (f failingOperator) Dim() int                   { return f.dim }
func (f failingOperator) Apply(_, _ []float64) error { return f.err }

// splitBatch cuts b into parts contiguous batches of near-equal size.
func splitBatch(b trainer.Batch, parts int) []trainer.Batch {
	n := b.Len()
	size := b.X.Shape.Size()
	out := make([]trainer.Batch, 0, parts)
	for p := range parts {
		from, to := p*n/parts, (p+1)*n/parts
		x := trainer.NewTensor(to-from, b.X.Shape)
		copy(x.Data, b.X.Data[from*size:to*size])
		out = append(out, trainer.Batch{X: x, Labels: append([]int(nil), b.Labels[from:to]...)})
	}
	return out
}
