package trainer

import (
	"fmt"
	"math/rand/v2"
)

// Residual is y = Body(x) + Shortcut(x), the skip connection of a ResNet
// block; a nil Shortcut is the identity. With NoSkip it is y = Body(x), the
// "no residual connection" variant the PyHessian paper compares.
type Residual struct {
	Body     *Sequential
	Shortcut *Sequential // nil: identity
	NoSkip   bool

	pBody, bBody int
}

// Build builds both branches and checks their shapes agree.
func (r *Residual) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	out, p, b, err := r.Body.Build(in)
	if err != nil {
		return Shape{}, nil, nil, err
	}
	r.pBody, r.bBody = r.Body.pLen, r.Body.bLen
	if r.NoSkip {
		return out, p, b, nil
	}
	if r.Shortcut == nil {
		if out != in {
			return Shape{}, nil, nil, fmt.Errorf("residual: identity shortcut but body maps %v to %v", in, out)
		}
		return out, p, b, nil
	}
	sout, sp, sb, err := r.Shortcut.Build(in)
	if err != nil {
		return Shape{}, nil, nil, fmt.Errorf("shortcut: %w", err)
	}
	if sout != out {
		return Shape{}, nil, nil, fmt.Errorf("residual: shortcut gives %v, body %v", sout, out)
	}
	for _, x := range sp {
		p = append(p, ParamSpec{Name: join("shortcut", x.Name), Shape: x.Shape})
	}
	for _, x := range sb {
		b = append(b, ParamSpec{Name: join("shortcut", x.Name), Shape: x.Shape})
	}
	return out, p, b, nil
}

// Init initialises both branches.
func (r *Residual) Init(p, buf []float64, rng *rand.Rand) {
	r.Body.Init(p[:r.pBody], buf[:r.bBody], rng)
	if r.Shortcut != nil && !r.NoSkip {
		r.Shortcut.Init(p[r.pBody:], buf[r.bBody:], rng)
	}
}

// NewFrame binds both branches.
func (r *Residual) NewFrame(p, buf []float64) Frame {
	f := &resFrame{r: r, body: r.Body.NewFrame(p[:r.pBody], buf[:r.bBody])}
	if r.Shortcut != nil && !r.NoSkip {
		f.short = r.Shortcut.NewFrame(p[r.pBody:], buf[r.bBody:])
	}
	return f
}

type resFrame struct {
	r              *Residual
	body, short    Frame
	y, ry, gx, rgx *Tensor
}

func (f *resFrame) split(v []float64) (body, short []float64) {
	if v == nil {
		return nil, nil
	}
	return v[:f.r.pBody], v[f.r.pBody:]
}

// sum writes a + b into dst; nil operands are zero.
func sum(dst *Tensor, a, b *Tensor) *Tensor {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		a, b = b, nil
	}
	dst = ensure(dst, a.N, a.Shape)
	copy(dst.Data, a.Data)
	if b != nil {
		for i, v := range b.Data {
			dst.Data[i] += v
		}
	}
	return dst
}

func (f *resFrame) Forward(x *Tensor, mode Mode) *Tensor {
	yb := f.body.Forward(x, mode)
	if f.r.NoSkip {
		return yb
	}
	ys := x
	if f.short != nil {
		ys = f.short.Forward(x, mode)
	}
	f.y = sum(f.y, yb, ys)
	return f.y
}

func (f *resFrame) Backward(gy *Tensor, gp []float64, needGX bool) *Tensor {
	pb, ps := f.split(gp)
	gb := f.body.Backward(gy, pb, needGX)
	if f.r.NoSkip {
		return gb
	}
	gs := gy
	if f.short != nil {
		gs = f.short.Backward(gy, ps, needGX)
	}
	if !needGX {
		return nil
	}
	f.gx = sum(f.gx, gb, gs)
	return f.gx
}

func (f *resFrame) RForward(rx *Tensor, v []float64) *Tensor {
	vb, vs := f.split(v)
	rb := f.body.RForward(rx, vb)
	if f.r.NoSkip {
		return rb
	}
	rs := rx
	if f.short != nil {
		rs = f.short.RForward(rx, vs)
	}
	f.ry = sum(f.ry, rb, rs)
	return f.ry
}

func (f *resFrame) RBackward(gy, rgy *Tensor, v, hv []float64, needGX bool) (*Tensor, *Tensor) {
	vb, vs := f.split(v)
	hb, hs := f.split(hv)
	gb, rgb := f.body.RBackward(gy, rgy, vb, hb, needGX)
	if f.r.NoSkip {
		return gb, rgb
	}
	gs, rgs := gy, rgy
	if f.short != nil {
		gs, rgs = f.short.RBackward(gy, rgy, vs, hs, needGX)
	}
	if !needGX {
		return nil, nil
	}
	f.gx = sum(f.gx, gb, gs)
	f.rgx = sum(f.rgx, rgb, rgs)
	return f.gx, f.rgx
}
