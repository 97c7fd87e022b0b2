package trainer

import (
	"fmt"
	"math/rand/v2"
)

// MaxPool2D takes the maximum over k×k windows with stride k. It is piecewise
// linear, so its R-operator routes through the same argmax as the forward.
type MaxPool2D struct{ K int }

// AvgPool2D averages k×k windows with stride k; K = 0 means global average
// pooling (PyTorch's AdaptiveAvgPool2d(1)).
type AvgPool2D struct{ K int }

func poolShape(in Shape, k int) (Shape, int, error) {
	if k == 0 {
		return Shape{H: 1, W: 1, C: in.C}, 0, nil
	}
	if k < 0 || in.H < k || in.W < k {
		return Shape{}, 0, fmt.Errorf("pool: window %d does not fit input %dx%d", k, in.H, in.W)
	}
	return Shape{H: in.H / k, W: in.W / k, C: in.C}, k, nil
}

// Build computes the pooled shape.
func (l *MaxPool2D) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	if l.K <= 0 {
		return Shape{}, nil, nil, fmt.Errorf("maxpool: window must be positive, got %d", l.K)
	}
	out, _, err := poolShape(in, l.K)
	return out, nil, nil, err
}

// Init does nothing.
func (l *MaxPool2D) Init(_, _ []float64, _ *rand.Rand) {}

// NewFrame returns an evaluation frame.
func (l *MaxPool2D) NewFrame(_, _ []float64) Frame { return &maxFrame{k: l.K} }

type maxFrame struct {
	k              int
	in             Shape
	n              int
	arg            []int32 // input index of each output's max (within the batch)
	y, ry, gx, rgx *Tensor
}

func (f *maxFrame) Forward(x *Tensor, _ Mode) *Tensor {
	f.in, f.n = x.Shape, x.N
	out := Shape{H: x.H / f.k, W: x.W / f.k, C: x.C}
	f.y = ensure(f.y, x.N, out)
	if cap(f.arg) < len(f.y.Data) {
		f.arg = make([]int32, len(f.y.Data))
	}
	f.arg = f.arg[:len(f.y.Data)]
	o := 0
	for n := 0; n < x.N; n++ {
		for oh := 0; oh < out.H; oh++ {
			for ow := 0; ow < out.W; ow++ {
				for c := 0; c < x.C; c++ {
					best := -1
					for i := 0; i < f.k; i++ {
						for j := 0; j < f.k; j++ {
							idx := ((n*x.H+oh*f.k+i)*x.W+ow*f.k+j)*x.C + c
							if best < 0 || x.Data[idx] > x.Data[best] {
								best = idx
							}
						}
					}
					f.arg[o] = int32(best)
					f.y.Data[o] = x.Data[best]
					o++
				}
			}
		}
	}
	return f.y
}

func (f *maxFrame) scatter(dst *Tensor, src []float64) *Tensor {
	dst = ensure(dst, f.n, f.in)
	clear(dst.Data)
	for o, idx := range f.arg {
		dst.Data[idx] += src[o]
	}
	return dst
}

func (f *maxFrame) Backward(gy *Tensor, _ []float64, needGX bool) *Tensor {
	if !needGX {
		return nil
	}
	f.gx = f.scatter(f.gx, gy.Data)
	return f.gx
}

func (f *maxFrame) RForward(rx *Tensor, _ []float64) *Tensor {
	if rx == nil {
		return nil
	}
	f.ry = ensure(f.ry, f.y.N, f.y.Shape)
	for o, idx := range f.arg {
		f.ry.Data[o] = rx.Data[idx]
	}
	return f.ry
}

func (f *maxFrame) RBackward(gy, rgy *Tensor, _, _ []float64, needGX bool) (*Tensor, *Tensor) {
	if !needGX {
		return nil, nil
	}
	f.gx = f.scatter(f.gx, gy.Data)
	f.rgx = f.scatter(f.rgx, rgy.Data)
	return f.gx, f.rgx
}

// Build computes the pooled shape.
func (l *AvgPool2D) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	out, _, err := poolShape(in, l.K)
	return out, nil, nil, err
}

// Init does nothing.
func (l *AvgPool2D) Init(_, _ []float64, _ *rand.Rand) {}

// NewFrame returns an evaluation frame.
func (l *AvgPool2D) NewFrame(_, _ []float64) Frame { return &avgFrame{k: l.K} }

// avgFrame is linear with no parameters: forward, backward and both
// R-passes are the same averaging map or its adjoint.
type avgFrame struct {
	k              int
	in, out        Shape
	n              int
	y, ry, gx, rgx *Tensor
}

func (f *avgFrame) window(in Shape) (kh, kw int, out Shape) {
	if f.k == 0 {
		return in.H, in.W, Shape{H: 1, W: 1, C: in.C}
	}
	return f.k, f.k, Shape{H: in.H / f.k, W: in.W / f.k, C: in.C}
}

func (f *avgFrame) pool(dst *Tensor, x []float64) *Tensor {
	kh, kw, out := f.window(f.in)
	dst = ensure(dst, f.n, out)
	clear(dst.Data)
	scale := 1 / float64(kh*kw)
	C := f.in.C
	for n := 0; n < f.n; n++ {
		for oh := 0; oh < out.H; oh++ {
			for ow := 0; ow < out.W; ow++ {
				d := dst.Data[((n*out.H+oh)*out.W+ow)*C:][:C]
				for i := 0; i < kh; i++ {
					for j := 0; j < kw; j++ {
						s := x[((n*f.in.H+oh*kh+i)*f.in.W+ow*kw+j)*C:][:C]
						for c, v := range s {
							d[c] += v * scale
						}
					}
				}
			}
		}
	}
	return dst
}

func (f *avgFrame) unpool(dst *Tensor, g []float64) *Tensor {
	kh, kw, out := f.window(f.in)
	dst = ensure(dst, f.n, f.in)
	clear(dst.Data)
	scale := 1 / float64(kh*kw)
	C := f.in.C
	for n := 0; n < f.n; n++ {
		for oh := 0; oh < out.H; oh++ {
			for ow := 0; ow < out.W; ow++ {
				s := g[((n*out.H+oh)*out.W+ow)*C:][:C]
				for i := 0; i < kh; i++ {
					for j := 0; j < kw; j++ {
						d := dst.Data[((n*f.in.H+oh*kh+i)*f.in.W+ow*kw+j)*C:][:C]
						for c, v := range s {
							d[c] += v * scale
						}
					}
				}
			}
		}
	}
	return dst
}

func (f *avgFrame) Forward(x *Tensor, _ Mode) *Tensor {
	f.in, f.n = x.Shape, x.N
	f.y = f.pool(f.y, x.Data)
	return f.y
}

func (f *avgFrame) Backward(gy *Tensor, _ []float64, needGX bool) *Tensor {
	if !needGX {
		return nil
	}
	f.gx = f.unpool(f.gx, gy.Data)
	return f.gx
}

func (f *avgFrame) RForward(rx *Tensor, _ []float64) *Tensor {
	if rx == nil {
		return nil
	}
	f.ry = f.pool(f.ry, rx.Data)
	return f.ry
}

func (f *avgFrame) RBackward(gy, rgy *Tensor, _, _ []float64, needGX bool) (*Tensor, *Tensor) {
	if !needGX {
		return nil, nil
	}
	f.gx = f.unpool(f.gx, gy.Data)
	f.rgx = f.unpool(f.rgx, rgy.Data)
	return f.gx, f.rgx
}

// Flatten turns an NHWC activation into a vector per sample in PyTorch's
// (C, H, W) order, so that the next Linear's weight matches a PyTorch model.
type Flatten struct{}

// Build returns the flattened shape.
func (Flatten) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	return Shape{H: 1, W: 1, C: in.Size()}, nil, nil, nil
}

// Init does nothing.
func (Flatten) Init(_, _ []float64, _ *rand.Rand) {}

// NewFrame returns an evaluation frame.
func (Flatten) NewFrame(_, _ []float64) Frame { return &flatFrame{} }

type flatFrame struct {
	in             Shape
	n              int
	y, ry, gx, rgx *Tensor
}

// perm maps NHWC to NCHW within a sample (dst[c*H*W+h*W+w] = src[(h*W+w)*C+c])
// or back when inverse.
func (f *flatFrame) perm(dst *Tensor, src []float64, inverse bool) *Tensor {
	s := f.in
	if inverse {
		dst = ensure(dst, f.n, s)
	} else {
		dst = ensure(dst, f.n, Shape{H: 1, W: 1, C: s.Size()})
	}
	size := s.Size()
	hw := s.H * s.W
	for n := 0; n < f.n; n++ {
		d, x := dst.Data[n*size:(n+1)*size], src[n*size:(n+1)*size]
		for p := 0; p < hw; p++ {
			for c := 0; c < s.C; c++ {
				if inverse {
					d[p*s.C+c] = x[c*hw+p]
				} else {
					d[c*hw+p] = x[p*s.C+c]
				}
			}
		}
	}
	return dst
}

func (f *flatFrame) Forward(x *Tensor, _ Mode) *Tensor {
	f.in, f.n = x.Shape, x.N
	f.y = f.perm(f.y, x.Data, false)
	return f.y
}

func (f *flatFrame) Backward(gy *Tensor, _ []float64, needGX bool) *Tensor {
	if !needGX {
		return nil
	}
	f.gx = f.perm(f.gx, gy.Data, true)
	return f.gx
}

func (f *flatFrame) RForward(rx *Tensor, _ []float64) *Tensor {
	if rx == nil {
		return nil
	}
	f.ry = f.perm(f.ry, rx.Data, false)
	return f.ry
}

func (f *flatFrame) RBackward(gy, rgy *Tensor, _, _ []float64, needGX bool) (*Tensor, *Tensor) {
	if !needGX {
		return nil, nil
	}
	f.gx = f.perm(f.gx, gy.Data, true)
	f.rgx = f.perm(f.rgx, rgy.Data, true)
	return f.gx, f.rgx
}
