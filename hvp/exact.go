package hvp

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hessmon/hessmon/trainer"
)

// Exact is the Hessian of a trainer model's mean loss on one fixed batch,
// applied with Pearlmutter's R-operator: no finite differences, exact up to
// rounding.
//
// It holds a frozen copy of the parameters, so the operator keeps describing
// the Hessian at the point it was made while training moves on; call Refresh
// to move it. The forward pass is computed once and reused by every Apply.
type Exact struct {
	mu    sync.Mutex
	net   *trainer.Network
	tape  *trainer.Tape
	batch trainer.Batch
	lossF trainer.Loss
	mode  trainer.Mode
	loss  float64
}

// NewExact freezes a copy of net and runs the forward pass on b. mode is
// trainer.ModeEval (BatchNorm with running statistics, as PyHessian) or
// trainer.ModeTrain (batch statistics, differentiated through).
func NewExact(net *trainer.Network, b trainer.Batch, loss trainer.Loss, mode trainer.Mode) (*Exact, error) {
	return newExact(net.Clone(), b, loss, mode)
}

func newExact(frozen *trainer.Network, b trainer.Batch, loss trainer.Loss, mode trainer.Mode) (*Exact, error) {
	if mode == trainer.ModeTrainUpdate {
		return nil, errors.New("hvp: Exact cannot use ModeTrainUpdate: a probe must not change the running statistics")
	}
	e := &Exact{net: frozen, tape: frozen.NewTape(), batch: b, lossF: loss, mode: mode}
	l, err := e.tape.Forward(b, loss, mode)
	if err != nil {
		return nil, fmt.Errorf("hvp: Exact forward pass: %w", err)
	}
	e.loss = l
	return e, nil
}

// Dim is the number of parameters.
func (e *Exact) Dim() int { return e.net.Dim() }

// Apply computes H·v. Calls are serialised: one Exact owns one tape.
func (e *Exact) Apply(dst, v []float64) error {
	if err := checkDims(e.Dim(), dst, v); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tape.HVP(dst, v)
}

// Loss is the mean loss on the batch at the frozen parameters.
func (e *Exact) Loss() float64 { return e.loss }

// Network is the frozen copy the operator differentiates.
func (e *Exact) Network() *trainer.Network { return e.net }

// Gradient writes the gradient of the batch loss at the frozen parameters.
func (e *Exact) Gradient(dst []float64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, err := e.tape.Grad(dst, e.batch, e.lossF, e.mode)
	if err != nil {
		return err
	}
	// Grad re-ran the forward pass on the same point; the tape is still valid for HVPs.
	return nil
}

// Refresh copies the current parameters of src (a network of the same
// architecture) and recomputes the forward pass.
func (e *Exact) Refresh(src *trainer.Network) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.net.CopyFrom(src); err != nil {
		return err
	}
	l, err := e.tape.Forward(e.batch, e.lossF, e.mode)
	if err != nil {
		return fmt.Errorf("hvp: Exact forward pass: %w", err)
	}
	e.loss = l
	return nil
}

// NewExactBatches is the Hessian of the loss averaged over several batches,
// weighted by batch size, one concurrent Exact per batch sharing one frozen
// copy of the parameters. This is PyHessian's full-dataset mode and how
// batches too large for one pass are split.
func NewExactBatches(net *trainer.Network, batches []trainer.Batch, loss trainer.Loss, mode trainer.Mode) (*ExactBatches, error) {
	if len(batches) == 0 {
		return nil, errors.New("hvp: no batches")
	}
	frozen := net.Clone()
	ops := make([]Operator, len(batches))
	w := make([]float64, len(batches))
	var lossSum, total float64
	for i, b := range batches {
		e, err := newExact(frozen, b, loss, mode)
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", i, err)
		}
		ops[i], w[i] = e, float64(b.Len())
		lossSum += e.Loss() * w[i]
		total += w[i]
	}
	m, err := NewMean(ops, w)
	if err != nil {
		return nil, err
	}
	return &ExactBatches{Mean: m, loss: lossSum / total}, nil
}

// ExactBatches is the exact Hessian of the mean loss over several batches.
type ExactBatches struct {
	*Mean
	loss float64
}

// Loss is the mean loss over all samples at the frozen parameters.
func (e *ExactBatches) Loss() float64 { return e.loss }
