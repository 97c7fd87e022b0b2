package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// Activation is an elementwise nonlinearity y = σ(x).
type Activation int

// Supported activations.
const (
	ReLU Activation = iota
	Tanh
	GELU // exact GELU, x·Φ(x), PyTorch's default
	Identity
)

// ParseActivation reads "relu", "tanh", "gelu" or "identity".
func ParseActivation(s string) (Activation, error) {
	switch strings.ToLower(s) {
	case "relu":
		return ReLU, nil
	case "tanh":
		return Tanh, nil
	case "gelu":
		return GELU, nil
	case "identity", "linear", "none":
		return Identity, nil
	}
	return 0, fmt.Errorf("unknown activation %q (want relu, tanh or gelu)", s)
}

func (a Activation) String() string {
	switch a {
	case ReLU:
		return "relu"
	case Tanh:
		return "tanh"
	case GELU:
		return "gelu"
	case Identity:
		return "identity"
	}
	return fmt.Sprintf("Activation(%d)", int(a))
}

// derivs returns σ'(x) and σ”(x) given x and y = σ(x).
func (a Activation) derivs(x, y float64) (d1, d2 float64) {
	switch a {
	case ReLU:
		if x > 0 {
			return 1, 0
		}
		return 0, 0
	case Tanh:
		d1 = 1 - y*y
		return d1, -2 * y * d1
	case GELU:
		pdf := math.Exp(-x*x/2) / math.Sqrt(2*math.Pi)
		cdf := 0.5 * math.Erfc(-x/math.Sqrt2)
		return cdf + x*pdf, pdf * (2 - x*x)
	}
	return 1, 0
}

func (a Activation) apply(x float64) float64 {
	switch a {
	case ReLU:
		return math.Max(x, 0)
	case Tanh:
		return math.Tanh(x)
	case GELU:
		return 0.5 * x * math.Erfc(-x/math.Sqrt2)
	}
	return x
}

// Act is an activation layer.
type Act struct{ Fn Activation }

// Build keeps the shape.
func (a *Act) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) { return in, nil, nil, nil }

// Init does nothing: activations have no parameters.
func (a *Act) Init(_, _ []float64, _ *rand.Rand) {}

// NewFrame returns an evaluation frame.
func (a *Act) NewFrame(_, _ []float64) Frame { return &actFrame{fn: a.Fn} }

type actFrame struct {
	fn         Activation
	x, rx      *Tensor
	y, ry      *Tensor
	d1, d2     []float64
	gx, rgx    *Tensor
	haveSecond bool
	// gxFresh: gx holds σ'(x)·gy for the current forward pass (set by the
	// first RBackward after Forward; gy does not depend on v).
	gxFresh bool
}

func (f *actFrame) Forward(x *Tensor, _ Mode) *Tensor {
	f.x, f.gxFresh = x, false
	f.y = ensure(f.y, x.N, x.Shape)
	if cap(f.d1) < len(x.Data) {
		f.d1 = make([]float64, len(x.Data))
		f.d2 = make([]float64, len(x.Data))
	}
	f.d1, f.d2 = f.d1[:len(x.Data)], f.d2[:len(x.Data)]
	for i, xi := range x.Data {
		yi := f.fn.apply(xi)
		f.y.Data[i] = yi
		f.d1[i], f.d2[i] = f.fn.derivs(xi, yi)
	}
	return f.y
}

func (f *actFrame) Backward(gy *Tensor, _ []float64, needGX bool) *Tensor {
	if !needGX {
		return nil
	}
	f.gx = ensure(f.gx, gy.N, gy.Shape)
	for i, g := range gy.Data {
		f.gx.Data[i] = f.d1[i] * g
	}
	f.gxFresh = false // gy may not be the one the HVPs propagate
	return f.gx
}

func (f *actFrame) RForward(rx *Tensor, _ []float64) *Tensor {
	f.rx = rx
	if rx == nil {
		return nil
	}
	f.ry = ensure(f.ry, rx.N, rx.Shape)
	ry, r, d1 := f.ry.Data[:len(rx.Data)], rx.Data, f.d1[:len(rx.Data)]
	parallelFor(len(r), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			ry[i] = d1[i] * r[i]
		}
	})
	return f.ry
}

// RBackward: R{gx} = σ'(x)·R{gy} + σ”(x)·R{x}·gy.
func (f *actFrame) RBackward(gy, rgy *Tensor, _, _ []float64, needGX bool) (*Tensor, *Tensor) {
	if !needGX {
		return nil, nil
	}
	if !f.gxFresh {
		f.gx = ensure(f.gx, gy.N, gy.Shape)
		gx, g, d1 := f.gx.Data[:len(gy.Data)], gy.Data, f.d1[:len(gy.Data)]
		parallelFor(len(g), 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				gx[i] = d1[i] * g[i]
			}
		})
		f.gxFresh = true
	}
	f.rgx = ensure(f.rgx, gy.N, gy.Shape)
	g, rg, d1 := gy.Data, rgy.Data[:len(gy.Data)], f.d1[:len(gy.Data)]
	rgx := f.rgx.Data[:len(g)]
	if f.rx == nil {
		parallelFor(len(g), 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				rgx[i] = d1[i] * rg[i]
			}
		})
		return f.gx, f.rgx
	}
	rx, d2 := f.rx.Data[:len(g)], f.d2[:len(g)]
	parallelFor(len(g), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			rgx[i] = d1[i]*rg[i] + d2[i]*rx[i]*g[i]
		}
	})
	return f.gx, f.rgx
}
