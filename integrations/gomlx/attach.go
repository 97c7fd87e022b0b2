package gomlx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"

	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
)

// AttachOptions configures Attach.
type AttachOptions struct {
	// Config is the probe: the trainer's Model and Loss and a fixed batch.
	Config
	// Optimizer and Beta1 (SGD momentum or Adam's β1) set the sharpness
	// threshold the snapshots compare λ1 with. The default is snapshot.SGD.
	Optimizer snapshot.Optimizer
	Beta1     float64
	// LearningRate, if > 0, is reported for every step. Otherwise it is read
	// from the context variable the GoMLX optimisers keep
	// (/optimizers/learning_rate), so schedules are followed.
	LearningRate float64
	// Adam, when set, hands every probe Adam's diagonal preconditioner
	// P = (1−β1^t)(√v̂_t + ε), read from the second-moment variables GoMLX's
	// Adam keeps, so that snapshots also carry λ1(P⁻¹H), the sharpness
	// Adam's threshold refers to. Its zero fields are GoMLX's defaults.
	Adam *AdamParams
	// Logger receives the monitor errors the hook does not return (default
	// slog.Default()).
	Logger *slog.Logger
	// KeepOpen leaves the monitor open at the loop's OnEnd; the caller
	// then closes it. By default OnEnd closes it, which waits for (or, once
	// ctx ends, cancels) the in-flight probe and flushes the sinks.
	KeepOpen bool
}

// AdamParams describes the optimizers.Adam() the trainer uses. Zero values
// are GoMLX v0.26.0's defaults: β1 0.9, β2 0.999, ε 1e-7, scope
// "AdamOptimizer".
type AdamParams struct {
	Beta1, Beta2, Epsilon float64
	Scope                 string
}

func (p AdamParams) withDefaults() AdamParams {
	if p.Beta1 == 0 {
		p.Beta1 = 0.9
	}
	if p.Beta2 == 0 {
		p.Beta2 = 0.999
	}
	if p.Epsilon == 0 {
		p.Epsilon = 1e-7
	}
	if p.Scope == "" {
		p.Scope = optimizers.AdamDefaultScope
	}
	return p
}

// Attached is the monitor hook of one train.Loop.
type Attached struct {
	ctx  context.Context
	loop *train.Loop
	mon  *monitor.Monitor
	opt  AttachOptions
	op   *Operator // the first operator built: its parameter order is every operator's
	log  *slog.Logger
	dim  int

	// The monitor may run a light probe while a full one is still going,
	// so each probe gets an operator of its own: free holds the ones no
	// probe uses (refreshed when a due step takes one), all every one
	// built (Close finalises them). At most two are ever built.
	mu   sync.Mutex
	free []*Operator
	all  []*Operator
}

// lease is one probe's use of a pooled operator. The monitor closes the
// operator when its probe is over, which hands it back for a later step.
type lease struct {
	*Operator
	a    *Attached
	once sync.Once
}

// Close returns the operator to the pool; it stays compiled.
func (l *lease) Close() error {
	l.once.Do(func() { l.a.release(l.Operator) })
	return nil
}

func (a *Attached) release(op *Operator) {
	a.mu.Lock()
	a.free = append(a.free, op)
	a.mu.Unlock()
}

// Attach makes mon watch loop: after every training step it hands the
// monitor the step's GlobalStep, its loss (metrics[0], the batch loss with
// regularisation, which the exporter shows as hessmon_training_loss) and
// learning rate; when a probe is due it refreshes a frozen copy of the
// model's variables and gives the monitor the HVP operator on it, so with
// monitor.Config.Async the probe runs while training goes on. The operator
// is compiled on the first due probe and reused after, so later probes
// only copy the variables; a second one is compiled the first time a light
// probe falls due while a full probe still runs.
//
// The hook never stops training: monitor errors are logged. ctx bounds the
// monitor calls; at OnEnd the monitor is closed with it (unless KeepOpen).
//
// The steps are the trainer's GlobalStep, so a loop restored from a GoMLX
// checkpoint goes on at the checkpoint's step, and a monitor writing to
// the run's store (a monitor.StepStore) continues its snapshots after the
// last stored one instead of restarting the schedule.
func Attach(ctx context.Context, loop *train.Loop, mon *monitor.Monitor, opt AttachOptions) (*Attached, error) {
	if loop == nil || mon == nil {
		return nil, errors.New("gomlx: Attach needs a train.Loop and a monitor")
	}
	if opt.Model == nil || len(opt.Inputs) == 0 {
		return nil, errors.New("gomlx: Attach needs AttachOptions.Model and a probe batch (Inputs)")
	}
	if opt.Optimizer == "" {
		opt.Optimizer = snapshot.SGD
	}
	a := &Attached{ctx: ctx, loop: loop, mon: mon, opt: opt, log: opt.Logger}
	if a.log == nil {
		a.log = slog.Default()
	}
	loop.OnStep("hessmon", train.Priority(0), a.onStep)
	loop.OnEnd("hessmon", train.Priority(0), a.onEnd)
	return a, nil
}

// Operator is the probe operator, nil before the first probe and after Close.
func (a *Attached) Operator() *Operator { return a.op }

// Dim is the number of parameters probed (0 before the first probe).
func (a *Attached) Dim() int { return a.dim }

// scalar copies a metric out: the loop frees its tensors at the next step.
func scalar(t *tensors.Tensor) (v float64, err error) {
	err = tryCatch(func() { v = shapes.ConvertTo[float64](t.Value()) })
	return v, err
}

func (a *Attached) learningRate(live *mlctx.Context) float64 {
	if a.opt.LearningRate > 0 {
		return a.opt.LearningRate
	}
	v := live.GetVariableByScopeAndName(mlctx.ScopeSeparator+optimizers.Scope, optimizers.ParamLearningRate)
	if v == nil || !v.HasValue() {
		return 0
	}
	t, err := v.Value()
	if err != nil {
		return 0
	}
	lr, _ := scalar(t)
	return lr
}

func (a *Attached) onStep(loop *train.Loop, metrics []*tensors.Tensor) error {
	live := loop.Trainer.Context()
	info := monitor.StepInfo{
		Step:         loop.Trainer.GlobalStep(),
		Optimizer:    a.opt.Optimizer,
		Beta1:        a.opt.Beta1,
		LearningRate: a.learningRate(live),
	}
	if len(metrics) > 0 {
		l, err := scalar(metrics[0])
		if err != nil {
			a.log.Warn("hessmon: reading the step's loss", "err", err)
		}
		info.Loss = l
	}
	var early *lease // taken before Step for Adam's P; handed to the probe if one starts
	if a.opt.Adam != nil && a.mon.Due(info.Step) {
		// P must be in the operator's parameter order, so an operator must
		// exist: take this step's now (a due step may still be skipped,
		// then it goes back to the pool below).
		if a.op == nil {
			l, err := a.operator(live)
			if err != nil {
				a.log.Warn("hessmon: building the probe operator", "step", info.Step, "err", err)
			} else {
				early = l
			}
		}
		if a.op != nil {
			p, err := a.adamPreconditioner(live)
			if err != nil {
				a.log.Warn("hessmon: reading Adam's preconditioner", "step", info.Step, "err", err)
			}
			info.Preconditioner = p
		}
	}
	err := a.mon.Step(a.ctx, info, func() (hvp.Operator, error) {
		if early != nil {
			l := early
			early = nil
			return l, nil
		}
		return a.operator(live)
	})
	if early != nil {
		_ = early.Close() // the due step was skipped
	}
	if err != nil && !errors.Is(err, monitor.ErrClosed) {
		a.log.Error("hessmon: monitor step", "step", info.Step, "err", err)
	}
	return nil
}

// operator takes a free operator from the pool and refreshes it with the
// live variables, or builds one when every operator is in a probe. It runs
// on the training goroutine, between steps.
func (a *Attached) operator(live *mlctx.Context) (*lease, error) {
	a.mu.Lock()
	var op *Operator
	if n := len(a.free); n > 0 {
		op, a.free = a.free[n-1], a.free[:n-1]
	}
	a.mu.Unlock()
	if op == nil {
		built, err := New(live, a.opt.Config)
		if err != nil {
			return nil, err
		}
		op = built
		a.mu.Lock()
		a.all = append(a.all, op)
		if a.op == nil {
			a.op, a.dim = op, op.Dim()
		}
		a.mu.Unlock()
	} else if err := op.Refresh(live); err != nil {
		a.release(op)
		return nil, err
	}
	return &lease{Operator: op, a: a}, nil
}

func (a *Attached) onEnd(_ *train.Loop, _ []*tensors.Tensor) error {
	if a.opt.KeepOpen {
		return nil
	}
	return a.Close()
}

// Close closes the monitor (waiting for the in-flight probe) and releases
// the operator. OnEnd calls it unless KeepOpen; calling it twice is safe.
func (a *Attached) Close() error {
	err := a.mon.Close(a.ctx)
	a.mu.Lock()
	for _, op := range a.all {
		op.Finalize()
	}
	a.op, a.all, a.free = nil, nil, nil
	a.mu.Unlock()
	if err != nil {
		return fmt.Errorf("gomlx: closing the monitor: %w", err)
	}
	return nil
}

// adamPreconditioner reads P = (1−β1^t)(√(v_t/(1−β2^t)) + ε) for every
// parameter, in the operator's order, from the live context: GoMLX's Adam
// keeps v_t in /<scope><variable scope>/<name>_2nd_moment and t in
// /<scope>/global_step.
func (a *Attached) adamPreconditioner(live *mlctx.Context) ([]float64, error) {
	ap := a.opt.Adam.withDefaults()
	scope := mlctx.ScopeSeparator + ap.Scope
	tv := live.GetVariableByScopeAndName(scope, optimizers.GlobalStepVariableName)
	if tv == nil || !tv.HasValue() {
		return nil, fmt.Errorf("gomlx: no Adam step counter %s/%s", scope, optimizers.GlobalStepVariableName)
	}
	tt, err := tv.Value()
	if err != nil {
		return nil, err
	}
	t, err := scalar(tt)
	if err != nil {
		return nil, err
	}
	if t < 1 {
		return nil, fmt.Errorf("gomlx: Adam has taken no step yet")
	}
	c1 := 1 - math.Pow(ap.Beta1, t)
	c2 := 1 - math.Pow(ap.Beta2, t)
	p := make([]float64, a.op.Dim())
	blocks := a.op.VariableBlocks()
	for i, v := range a.op.Variables() {
		b := blocks[i]
		m2 := live.GetVariableByScopeAndName(scope+v.Scope(), v.Name()+"_2nd_moment")
		if m2 == nil {
			return nil, fmt.Errorf("gomlx: no Adam second moment for %s", v.ScopeAndName())
		}
		dst := p[b.Offset : b.Offset+b.Len]
		if err := copyOut(dst, m2); err != nil {
			return nil, err
		}
		for j, m := range dst {
			dst[j] = c1 * (math.Sqrt(m/c2) + ap.Epsilon)
		}
	}
	return p, nil
}
