package trainer

import (
	"fmt"
	"math/rand/v2"
)

// Mode selects how BatchNorm normalises during a pass.
type Mode int

const (
	// ModeEval uses the running statistics, as PyHessian does for its analysis.
	ModeEval Mode = iota
	// ModeTrain uses the batch statistics and differentiates through them.
	ModeTrain
	// ModeTrainUpdate is ModeTrain that also updates the running statistics; the
	// training loop uses it, Hessian probes never do.
	ModeTrainUpdate
)

func (m Mode) String() string {
	switch m {
	case ModeEval:
		return "eval"
	case ModeTrain:
		return "train"
	case ModeTrainUpdate:
		return "train-update"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParamSpec names one parameter tensor with PyTorch's shape, e.g.
// fc1.weight [out, in] or conv1.weight [out, in, kh, kw].
type ParamSpec struct {
	Name  string
	Shape []int
}

// Len is the number of values in the tensor.
func (p ParamSpec) Len() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Layer is one differentiable map with exact first and second-order
// (R-operator) passes. A Layer only describes the architecture; evaluation
// state lives in Frames so one network can be evaluated concurrently.
type Layer interface {
	// Build fixes the input shape and returns the output shape, the
	// parameter and buffer tensors (names relative to the layer), in the
	// order they are laid out in the flat vectors.
	Build(in Shape) (out Shape, params, buffers []ParamSpec, err error)
	// Init writes initial parameter and buffer values.
	Init(p, buf []float64, rng *rand.Rand)
	// NewFrame binds evaluation state to the layer's parameter and buffer
	// slices. The frame reads p and writes buf only in ModeTrainUpdate.
	NewFrame(p, buf []float64) Frame
}

// Frame evaluates a layer. Tensors it returns are owned by the frame and
// stay valid until its next call of the same method. Inputs passed in must
// stay unchanged until the pass that uses them ends.
//
// Pearlmutter's R-operator: for a direction v in parameter space, RForward
// propagates the directional derivative of the activations, and RBackward
// propagates the directional derivative of the gradient, whose parameter
// part is exactly H·v.
type Frame interface {
	// Forward computes y = f(x; p).
	Forward(x *Tensor, mode Mode) *Tensor
	// Backward takes ∂L/∂y, adds ∂L/∂p into gp (when gp is not nil) and
	// returns ∂L/∂x when needGX.
	Backward(gy *Tensor, gp []float64, needGX bool) *Tensor
	// RForward returns R{y} given R{x} (nil means zero) and the layer's part
	// of the direction v.
	RForward(rx *Tensor, v []float64) *Tensor
	// RBackward takes ∂L/∂y and R{∂L/∂y}, adds R{∂L/∂p} into hv and, when
	// needGX, returns ∂L/∂x and R{∂L/∂x}.
	RBackward(gy, rgy *Tensor, v, hv []float64, needGX bool) (gx, rgx *Tensor)
}

// Named is a layer with its name in the parameter namespace.
type Named struct {
	Name  string
	Layer Layer
}

// Sequential chains layers; parameter names are the children's names joined
// with dots, as in PyTorch's state_dict.
type Sequential struct {
	Layers []Named

	built    bool
	pOff     []int // parameter offset of each child
	bOff     []int
	pLen     int
	bLen     int
	outShape Shape
}

// Seq is a convenience constructor.
func Seq(layers ...Named) *Sequential { return &Sequential{Layers: layers} }

// Build builds every child in order.
func (s *Sequential) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	var params, bufs []ParamSpec
	s.pOff = make([]int, len(s.Layers)+1)
	s.bOff = make([]int, len(s.Layers)+1)
	cur := in
	for i, nl := range s.Layers {
		out, p, b, err := nl.Layer.Build(cur)
		if err != nil {
			return Shape{}, nil, nil, fmt.Errorf("%s: %w", nl.Name, err)
		}
		s.pOff[i+1], s.bOff[i+1] = s.pOff[i], s.bOff[i]
		for _, ps := range p {
			params = append(params, ParamSpec{Name: join(nl.Name, ps.Name), Shape: ps.Shape})
			s.pOff[i+1] += ps.Len()
		}
		for _, bs := range b {
			bufs = append(bufs, ParamSpec{Name: join(nl.Name, bs.Name), Shape: bs.Shape})
			s.bOff[i+1] += bs.Len()
		}
		cur = out
	}
	s.pLen, s.bLen = s.pOff[len(s.Layers)], s.bOff[len(s.Layers)]
	s.outShape = cur
	s.built = true
	return cur, params, bufs, nil
}

func join(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

// Init initialises every child.
func (s *Sequential) Init(p, buf []float64, rng *rand.Rand) {
	for i, nl := range s.Layers {
		nl.Layer.Init(p[s.pOff[i]:s.pOff[i+1]], buf[s.bOff[i]:s.bOff[i+1]], rng)
	}
}

// NewFrame binds frames for every child.
func (s *Sequential) NewFrame(p, buf []float64) Frame {
	f := &seqFrame{s: s, frames: make([]Frame, len(s.Layers))}
	for i, nl := range s.Layers {
		f.frames[i] = nl.Layer.NewFrame(p[s.pOff[i]:s.pOff[i+1]], buf[s.bOff[i]:s.bOff[i+1]])
	}
	return f
}

type seqFrame struct {
	s      *Sequential
	frames []Frame
}

func (f *seqFrame) Forward(x *Tensor, mode Mode) *Tensor {
	for _, fr := range f.frames {
		x = fr.Forward(x, mode)
	}
	return x
}

func (f *seqFrame) sub(v []float64, i int) []float64 {
	if v == nil {
		return nil
	}
	return v[f.s.pOff[i]:f.s.pOff[i+1]]
}

func (f *seqFrame) Backward(gy *Tensor, gp []float64, needGX bool) *Tensor {
	for i := len(f.frames) - 1; i >= 0; i-- {
		gy = f.frames[i].Backward(gy, f.sub(gp, i), i > 0 || needGX)
	}
	return gy
}

func (f *seqFrame) RForward(rx *Tensor, v []float64) *Tensor {
	for i, fr := range f.frames {
		rx = fr.RForward(rx, f.sub(v, i))
	}
	return rx
}

func (f *seqFrame) RBackward(gy, rgy *Tensor, v, hv []float64, needGX bool) (*Tensor, *Tensor) {
	for i := len(f.frames) - 1; i >= 0; i-- {
		gy, rgy = f.frames[i].RBackward(gy, rgy, f.sub(v, i), f.sub(hv, i), i > 0 || needGX)
	}
	return gy, rgy
}
