// Package hessian is the adapter between hessmon's trainer and the
// loop-agnostic curvature core: exact Hessian operators of trainer models
// (Pearlmutter's R-operator), the parameter blocks of a network, and the
// trainer hook that drives a monitor.Monitor.
//
// It is the only place, besides the trainer itself, that knows a trainer
// model; hvp, estimators and monitor see nothing but an hvp.Operator.
package hessian

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
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
		return nil, errors.New("hessian: Exact cannot use ModeTrainUpdate: a probe must not change the running statistics")
	}
	e := &Exact{net: frozen, tape: frozen.NewTape(), batch: b, lossF: loss, mode: mode}
	l, err := e.tape.Forward(b, loss, mode)
	if err != nil {
		return nil, fmt.Errorf("hessian: Exact forward pass: %w", err)
	}
	e.loss = l
	return e, nil
}

// Dim is the number of parameters.
func (e *Exact) Dim() int { return e.net.Dim() }

// Apply computes H·v. Calls are serialised: one Exact owns one tape.
func (e *Exact) Apply(dst, v []float64) error {
	if len(dst) != e.Dim() || len(v) != e.Dim() {
		return fmt.Errorf("%w: operator dim %d, len(dst)=%d, len(v)=%d", hvp.ErrDim, e.Dim(), len(dst), len(v))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return nonFinite(e.tape.HVP(dst, v))
}

// nonFinite marks the trainer's NaN/Inf errors as hvp.ErrNonFinite, so that
// the monitor reports a diverged model as "nan" rather than "error".
func nonFinite(err error) error {
	if errors.Is(err, trainer.ErrNonFinite) {
		return fmt.Errorf("%w: %w", hvp.ErrNonFinite, err)
	}
	return err
}

// Blocks returns one block per parameter tensor, for per-layer traces.
func (e *Exact) Blocks() []estimators.Block { return Blocks(e.net) }

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
		return fmt.Errorf("hessian: Exact forward pass: %w", err)
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
		return nil, errors.New("hessian: no batches")
	}
	frozen := net.Clone()
	ops := make([]hvp.Operator, len(batches))
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
	m, err := hvp.NewMean(ops, w)
	if err != nil {
		return nil, err
	}
	return &ExactBatches{Mean: m, loss: lossSum / total, net: frozen}, nil
}

// ExactBatches is the exact Hessian of the mean loss over several batches.
type ExactBatches struct {
	*hvp.Mean
	loss float64
	net  *trainer.Network
}

// Loss is the mean loss over all samples at the frozen parameters.
func (e *ExactBatches) Loss() float64 { return e.loss }

// Blocks returns one block per parameter tensor, for per-layer traces.
func (e *ExactBatches) Blocks() []estimators.Block { return Blocks(e.net) }

// NewChunked is the exact Hessian of the mean loss over b, cut into
// consecutive chunks of maxChunk samples (the last one shorter) that run
// concurrently (see NewExactBatches), so that large batches fit in memory
// and use every core. A batch of at most maxChunk samples gets one Exact.
//
// With ModeTrain BatchNorm each chunk is normalised by its own batch
// statistics, as in data-parallel training without SyncBN: the Hessian then
// depends on maxChunk.
func NewChunked(net *trainer.Network, b trainer.Batch, loss trainer.Loss, mode trainer.Mode, maxChunk int) (hvp.Operator, error) {
	if maxChunk <= 0 {
		return nil, fmt.Errorf("hessian: chunk size %d, want > 0", maxChunk)
	}
	if b.Len() <= maxChunk {
		return operator(NewExact(net, b, loss, mode))
	}
	var batches []trainer.Batch
	for from := 0; from < b.Len(); from += maxChunk {
		batches = append(batches, slice(b, from, min(from+maxChunk, b.Len())))
	}
	return operator(NewExactBatches(net, batches, loss, mode))
}

// operator returns a constructor's result as an hvp.Operator, and a nil
// interface on error: returning the nil *Exact itself would put a typed nil
// inside a non-nil interface, which passes a caller's op != nil check.
func operator[T hvp.Operator](op T, err error) (hvp.Operator, error) {
	if err != nil {
		return nil, err
	}
	return op, nil
}

// slice copies samples [from, to) of b.
func slice(b trainer.Batch, from, to int) trainer.Batch {
	size := b.X.Shape.Size()
	x := trainer.NewTensor(to-from, b.X.Shape)
	copy(x.Data, b.X.Data[from*size:to*size])
	return trainer.Batch{X: x, Labels: append([]int(nil), b.Labels[from:to]...)}
}

// Split cuts b into parts contiguous batches of near-equal size (sizes
// differ by at most one). The batches are copies.
func Split(b trainer.Batch, parts int) []trainer.Batch {
	n := b.Len()
	parts = max(1, min(parts, n))
	out := make([]trainer.Batch, 0, parts)
	for p := range parts {
		out = append(out, slice(b, p*n/parts, (p+1)*n/parts))
	}
	return out
}

// hasBatchNorm reports whether net has BatchNorm buffers (running
// statistics), the only layers that couple the samples of a batch.
func hasBatchNorm(net *trainer.Network) bool { return len(net.BufferInfo()) > 0 }

// Blocks returns one trace block per parameter tensor of net, named as
// PyTorch names the tensor (e.g. "layers.0.weight").
func Blocks(net *trainer.Network) []estimators.Block {
	info := net.ParamInfo()
	b := make([]estimators.Block, len(info))
	for i, p := range info {
		b[i] = estimators.Block{Name: p.Name, Offset: p.Offset, Len: p.Len}
	}
	return b
}

// ShardDataset returns the part of d that comm's rank owns (see hvp.Shard).
// The result is a view: it shares d's storage.
func ShardDataset(d *data.Dataset, comm hvp.Comm) (*data.Dataset, error) {
	from, to, err := hvp.Shard(d.Len(), comm.Rank(), comm.Size())
	if err != nil {
		return nil, err
	}
	return d.Subset(from, to)
}
