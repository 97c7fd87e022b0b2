package trainer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas/blas64"
)

// ParamInfo locates one named parameter tensor in the flat vector.
type ParamInfo struct {
	Name   string
	Shape  []int
	Offset int
	Len    int
}

// Network is a model: an architecture plus one flat parameter vector and one
// flat buffer vector (BatchNorm running statistics).
//
// The flat vector is the view every curvature tool works on: the Hessian is
// Dim()×Dim(), and parameter names and PyTorch shapes say which slice is
// which tensor (fc1.weight [out,in], then fc1.bias, …).
type Network struct {
	desc    string
	in      Shape
	out     Shape
	root    *Sequential
	params  []float64
	buffers []float64
	pinfo   []ParamInfo
	binfo   []ParamInfo
}

// NewNetwork builds layers for inputs of shape in and initialises the
// parameters from seed, following PyTorch's default initialisations. The
// first call also chooses the process's BLAS (see BLAS).
func NewNetwork(desc string, in Shape, seed uint64, layers ...Named) (*Network, error) {
	BLAS() // choose the process's BLAS before the first GEMM
	root := Seq(layers...)
	out, ps, bs, err := root.Build(in)
	if err != nil {
		return nil, fmt.Errorf("trainer: building %s: %w", desc, err)
	}
	n := &Network{desc: desc, in: in, out: out, root: root}
	n.pinfo, n.params = layout(ps)
	n.binfo, n.buffers = layout(bs)
	seen := map[string]bool{}
	for _, p := range append(append([]ParamInfo(nil), n.pinfo...), n.binfo...) {
		if seen[p.Name] {
			return nil, fmt.Errorf("trainer: duplicate parameter name %q in %s", p.Name, desc)
		}
		seen[p.Name] = true
	}
	root.Init(n.params, n.buffers, rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)))
	return n, nil
}

func layout(specs []ParamSpec) ([]ParamInfo, []float64) {
	info := make([]ParamInfo, len(specs))
	off := 0
	for i, s := range specs {
		info[i] = ParamInfo{Name: s.Name, Shape: append([]int(nil), s.Shape...), Offset: off, Len: s.Len()}
		off += s.Len()
	}
	return info, make([]float64, off)
}

// String describes the architecture, e.g. "mlp 784-128-128-10 tanh".
func (n *Network) String() string { return n.desc }

// Dim is the number of parameters.
func (n *Network) Dim() int { return len(n.params) }

// InShape and OutShape are the per-sample input and output shapes.
func (n *Network) InShape() Shape  { return n.in }
func (n *Network) OutShape() Shape { return n.out }

// Params returns the flat parameter vector itself (not a copy): optimisers
// update it in place.
func (n *Network) Params() []float64 { return n.params }

// Buffers returns the flat non-trainable state (BatchNorm running stats).
func (n *Network) Buffers() []float64 { return n.buffers }

// ParamInfo lists the parameter tensors in layout order.
func (n *Network) ParamInfo() []ParamInfo { return n.pinfo }

// BufferInfo lists the buffer tensors in layout order.
func (n *Network) BufferInfo() []ParamInfo { return n.binfo }

// Clone returns a network with the same architecture and copies of the
// parameters and buffers. Probes use clones to look at a frozen point while
// training moves on.
func (n *Network) Clone() *Network {
	c := *n
	c.params = append([]float64(nil), n.params...)
	c.buffers = append([]float64(nil), n.buffers...)
	return &c
}

// CopyFrom copies parameters and buffers from a network of the same
// architecture.
func (n *Network) CopyFrom(src *Network) error {
	if src.root != n.root {
		return errors.New("trainer: CopyFrom needs a network of the same architecture (a Clone)")
	}
	copy(n.params, src.params)
	copy(n.buffers, src.buffers)
	return nil
}

// ErrNonFinite reports a NaN or infinite value in a derivative.
var ErrNonFinite = errors.New("trainer: non-finite value")

// Tape holds the evaluation state of one network: activations of the last
// forward pass and the buffers of the backward passes. A Tape is not safe
// for concurrent use; make one per goroutine.
type Tape struct {
	net    *Network
	frame  Frame
	out    *Tensor
	gz     *Tensor
	rgz    *Tensor
	batch  Batch
	loss   Loss
	mode   Mode
	ready  bool
	lossV  float64
	hvZero []float64
}

// NewTape binds a tape to n's parameters.
func (n *Network) NewTape() *Tape {
	return &Tape{net: n, frame: n.root.NewFrame(n.params, n.buffers)}
}

// Network returns the network the tape evaluates.
func (t *Tape) Network() *Network { return t.net }

func (t *Tape) checkBatch(b Batch) error {
	if b.X == nil || b.X.N == 0 {
		return errors.New("trainer: empty batch")
	}
	if b.X.Shape != t.net.in {
		return fmt.Errorf("trainer: batch shape %v, network expects %v", b.X.Shape, t.net.in)
	}
	return nil
}

// Forward runs the network on b and returns the mean loss. The activations
// stay on the tape for Backward and HVP.
func (t *Tape) Forward(b Batch, loss Loss, mode Mode) (float64, error) {
	if err := t.checkBatch(b); err != nil {
		return 0, err
	}
	t.out = t.frame.Forward(b.X, mode)
	t.gz = ensure(t.gz, t.out.N, t.out.Shape)
	l, err := loss.Eval(t.gz.Data, t.out, b)
	if err != nil {
		t.ready = false
		return 0, err
	}
	t.batch, t.loss, t.mode, t.ready, t.lossV = b, loss, mode, true, l
	return l, nil
}

// Output returns the network output of the last Forward.
func (t *Tape) Output() *Tensor { return t.out }

// Grad runs Forward and writes the gradient of the mean loss into dst.
func (t *Tape) Grad(dst []float64, b Batch, loss Loss, mode Mode) (float64, error) {
	if len(dst) != t.net.Dim() {
		return 0, fmt.Errorf("trainer: gradient has length %d, want %d", len(dst), t.net.Dim())
	}
	l, err := t.Forward(b, loss, mode)
	if err != nil {
		return 0, err
	}
	clear(dst)
	t.frame.Backward(t.gz, dst, false)
	return l, nil
}

// HVP writes H·v into dst, the Hessian of the loss of the last Forward at
// the current parameters, with Pearlmutter's R-operator: one R-forward and
// one R-backward pass, no finite differences. Forward must have been called
// with the same parameters; repeated HVPs reuse it.
func (t *Tape) HVP(dst, v []float64) error {
	n := t.net.Dim()
	if len(dst) != n || len(v) != n {
		return fmt.Errorf("trainer: HVP vectors have lengths %d and %d, want %d", len(dst), len(v), n)
	}
	if !t.ready {
		return errors.New("trainer: HVP before Forward")
	}
	rz := t.frame.RForward(nil, v)
	t.rgz = ensure(t.rgz, t.out.N, t.out.Shape)
	if rz == nil {
		clear(t.rgz.Data)
	} else {
		t.loss.HessVec(t.rgz.Data, t.out, rz.Data, t.batch)
	}
	clear(dst)
	t.frame.RBackward(t.gz, t.rgz, v, dst, false)
	if hasNonFinite(dst) {
		return fmt.Errorf("%w in the HVP (the model or loss has diverged)", ErrNonFinite)
	}
	return nil
}

// hasNonFinite reports a NaN or ±Inf in x. xᵀx (a vectorised BLAS call) is
// NaN or +Inf whenever x holds one, so the element scan, which costs as
// much as a small GEMM on 10⁵ parameters, runs only then (or on overflow).
func hasNonFinite(x []float64) bool {
	if len(x) == 0 {
		return false
	}
	v := blas64.Vector{N: len(x), Inc: 1, Data: x}
	if s := blas64.Dot(v, v); !math.IsNaN(s) && !math.IsInf(s, 0) {
		return false
	}
	for _, e := range x {
		if math.IsNaN(e) || math.IsInf(e, 0) {
			return true
		}
	}
	return false
}

// Loss returns the loss of the last Forward.
func (t *Tape) Loss() float64 { return t.lossV }

// Predict returns the argmax class of each sample of x (Eval mode).
func (t *Tape) Predict(dst []int, x *Tensor) ([]int, error) {
	if x.Shape != t.net.in {
		return nil, fmt.Errorf("trainer: input shape %v, network expects %v", x.Shape, t.net.in)
	}
	out := t.frame.Forward(x, ModeEval)
	t.ready = false
	c := out.C
	dst = dst[:0]
	for i := 0; i < out.N; i++ {
		row := out.Data[i*c : (i+1)*c]
		best := 0
		for j, v := range row {
			if v > row[best] {
				best = j
			}
		}
		dst = append(dst, best)
	}
	return dst, nil
}
