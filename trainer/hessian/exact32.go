package hessian

import (
	"errors"
	"fmt"
	"sync"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// Options choose how an exact operator is built (NewOperator).
type Options struct {
	// Precision of the HVPs: snapshot.Float64 (or empty) for Exact and its
	// chunked forms, snapshot.Float32 for Exact32. The estimators' arithmetic
	// is float64 either way.
	Precision snapshot.Precision
	// MaxChunk, when positive, cuts the batch into chunks of at most that
	// many samples that run concurrently (see NewChunked).
	MaxChunk int
	// Parts, when above 1, splits the batch into that many near-equal
	// chunks instead (see Split); MaxChunk wins when both are set.
	Parts int
}

// ParsePrecision reads "float64" or "float32" (also "f64", "f32", "64",
// "32"); empty is float64.
func ParsePrecision(s string) (snapshot.Precision, error) {
	switch s {
	case "", "float64", "f64", "64", "double":
		return snapshot.Float64, nil
	case "float32", "f32", "32", "single":
		return snapshot.Float32, nil
	}
	return "", fmt.Errorf("unknown precision %q (want float32 or float64)", s)
}

// NewOperator builds the exact Hessian operator of net's mean loss on b at
// a frozen copy of the parameters, in the precision and chunking opt asks
// for. float32 covers the MLP family; for other models it returns an error
// wrapping trainer.ErrFloat32Unsupported (never a partial operator).
func NewOperator(net *trainer.Network, b trainer.Batch, loss trainer.Loss, mode trainer.Mode, opt Options) (hvp.Operator, error) {
	var batches []trainer.Batch
	switch {
	case opt.MaxChunk > 0 && b.Len() > opt.MaxChunk:
		for from := 0; from < b.Len(); from += opt.MaxChunk {
			batches = append(batches, slice(b, from, min(from+opt.MaxChunk, b.Len())))
		}
	case opt.MaxChunk <= 0 && opt.Parts > 1 && b.Len() >= 2*opt.Parts:
		batches = Split(b, opt.Parts)
	}
	switch opt.Precision {
	case "", snapshot.Float64:
		if batches == nil {
			return operator(NewExact(net, b, loss, mode))
		}
		return operator(NewExactBatches(net, batches, loss, mode))
	case snapshot.Float32:
		if batches == nil {
			batches = []trainer.Batch{b}
		}
		return operator(newExact32(net, batches, loss, mode))
	}
	return nil, fmt.Errorf("hessian: unknown precision %q", opt.Precision)
}

// Exact32 is Exact with float32 HVPs: the parameters are frozen as float32,
// and the R-forward and R-backward passes run in float32 through sgemm of
// the same run-time BLAS. Apply still takes and returns float64 vectors, so
// the estimators, their reductions and their residuals stay float64: the
// residuals are computed from the float32 products, never assumed.
//
// On several batches (chunks) it is their size-weighted mean, one float32
// tape per batch sharing one frozen float32 copy of the parameters.
type Exact32 struct {
	op   hvp.Operator // one *tape32Op, or the *hvp.Mean of several
	net  *trainer.Network
	loss float64
}

// Dim is the number of parameters.
func (e *Exact32) Dim() int { return e.op.Dim() }

// Apply computes H·v in float32 (v is rounded to float32 on the way in).
func (e *Exact32) Apply(dst, v []float64) error { return e.op.Apply(dst, v) }

// SetWorkers bounds how many chunks run at once (see hvp.Mean.SetWorkers);
// it does nothing on one batch.
func (e *Exact32) SetWorkers(n int) {
	if m, ok := e.op.(*hvp.Mean); ok {
		m.SetWorkers(n)
	}
}

type tape32Op struct {
	mu   sync.Mutex
	tape *trainer.Tape32
	dim  int
}

func (o *tape32Op) Dim() int { return o.dim }

func (o *tape32Op) Apply(dst, v []float64) error {
	if len(dst) != o.dim || len(v) != o.dim {
		return fmt.Errorf("%w: operator dim %d, len(dst)=%d, len(v)=%d", hvp.ErrDim, o.dim, len(dst), len(v))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return nonFinite(o.tape.HVP(dst, v))
}

// NewExact32 is NewExact in float32 (see Exact32).
func NewExact32(net *trainer.Network, b trainer.Batch, loss trainer.Loss, mode trainer.Mode) (*Exact32, error) {
	return newExact32(net, []trainer.Batch{b}, loss, mode)
}

func newExact32(net *trainer.Network, batches []trainer.Batch, loss trainer.Loss, mode trainer.Mode) (*Exact32, error) {
	if mode == trainer.ModeTrainUpdate {
		return nil, errors.New("hessian: Exact32 cannot use ModeTrainUpdate: a probe must not change the running statistics")
	}
	frozen, err := trainer.NewNetwork32(net)
	if err != nil {
		return nil, fmt.Errorf("hessian: %w", err)
	}
	ops := make([]hvp.Operator, len(batches))
	w := make([]float64, len(batches))
	var lossSum, total float64
	for i, b := range batches {
		t := frozen.NewTape32()
		l, err := t.Forward(b, loss)
		if err != nil {
			return nil, fmt.Errorf("hessian: Exact32 forward pass on batch %d: %w", i, err)
		}
		ops[i], w[i] = &tape32Op{tape: t, dim: frozen.Dim()}, float64(b.Len())
		lossSum += l * w[i]
		total += w[i]
	}
	e := &Exact32{op: ops[0], net: net, loss: lossSum / total}
	if len(ops) > 1 {
		m, err := hvp.NewMean(ops, w)
		if err != nil {
			return nil, err
		}
		e.op = m
	}
	return e, nil
}

// Precision is snapshot.Float32: the monitor records it in each snapshot.
func (e *Exact32) Precision() snapshot.Precision { return snapshot.Float32 }

// Loss is the mean loss over the batches, from the float32 forward pass.
func (e *Exact32) Loss() float64 { return e.loss }

// Blocks returns one block per parameter tensor, for per-layer traces.
func (e *Exact32) Blocks() []estimators.Block { return Blocks(e.net) }
