package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// BatchNorm normalises each channel: over the batch for dense inputs
// (PyTorch's BatchNorm1d) and over batch and pixels for conv inputs
// (BatchNorm2d). Both are the same operation on NHWC rows.
//
// In ModeEval it uses the running statistics, which makes it an affine map
// of its input (PyHessian analyses models this way). In ModeTrain it uses
// the batch statistics, and the Hessian includes their second derivatives.
type BatchNorm struct {
	C        int
	Eps      float64 // default 1e-5
	Momentum float64 // default 0.1, PyTorch's convention
}

func (l *BatchNorm) eps() float64 {
	if l.Eps > 0 {
		return l.Eps
	}
	return 1e-5
}

func (l *BatchNorm) momentum() float64 {
	if l.Momentum > 0 {
		return l.Momentum
	}
	return 0.1
}

// Build checks the channel count.
func (l *BatchNorm) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	if in.C != l.C {
		return Shape{}, nil, nil, fmt.Errorf("batchnorm: input has %d channels, layer expects %d", in.C, l.C)
	}
	return in,
		[]ParamSpec{{Name: "weight", Shape: []int{l.C}}, {Name: "bias", Shape: []int{l.C}}},
		[]ParamSpec{{Name: "running_mean", Shape: []int{l.C}}, {Name: "running_var", Shape: []int{l.C}}},
		nil
}

// Init sets γ = 1, β = 0, running mean 0 and running variance 1.
func (l *BatchNorm) Init(p, buf []float64, _ *rand.Rand) {
	for i := 0; i < l.C; i++ {
		p[i], p[l.C+i] = 1, 0
		buf[i], buf[l.C+i] = 0, 1
	}
}

// NewFrame binds the layer.
func (l *BatchNorm) NewFrame(p, buf []float64) Frame {
	return &bnFrame{l: l, gamma: p[:l.C], beta: p[l.C:], rmean: buf[:l.C], rvar: buf[l.C:]}
}

type bnFrame struct {
	l                  *BatchNorm
	gamma, beta        []float64
	rmean, rvar        []float64
	batch              bool      // statistics from the batch (Train modes)
	s                  []float64 // per-channel std
	xh, rxh            []float64 // normalised input and its R
	rs                 []float64 // R{s}/s per channel (batch mode)
	y, ry, gx, rgx     *Tensor
	tmp1, tmp2, tmp3   []float64
	rowsN              int
	inShape            Shape
	inN                int
	haveRX, haveRXHalf bool
}

func grow(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	b = b[:n]
	clear(b)
	return b
}

func (f *bnFrame) Forward(x *Tensor, mode Mode) *Tensor {
	c := f.l.C
	rows := x.Rows()
	f.rowsN, f.inShape, f.inN = rows, x.Shape, x.N
	f.batch = mode != ModeEval
	f.s = grow(f.s, c)
	f.xh = grow(f.xh, len(x.Data))
	mean := grow(f.tmp1, c)
	f.tmp1 = mean
	if f.batch {
		sumRows(mean, x.Data)
		for j := range mean {
			mean[j] /= float64(rows)
		}
		v := grow(f.tmp2, c)
		f.tmp2 = v
		for i := 0; i < rows; i++ {
			row := x.Data[i*c : (i+1)*c]
			for j, xv := range row {
				d := xv - mean[j]
				v[j] += d * d
			}
		}
		for j := range v {
			v[j] /= float64(rows)
			f.s[j] = math.Sqrt(v[j] + f.l.eps())
		}
		if mode == ModeTrainUpdate {
			m := f.l.momentum()
			unbias := 1.0
			if rows > 1 {
				unbias = float64(rows) / float64(rows-1)
			}
			for j := 0; j < c; j++ {
				f.rmean[j] = (1-m)*f.rmean[j] + m*mean[j]
				f.rvar[j] = (1-m)*f.rvar[j] + m*v[j]*unbias
			}
		}
	} else {
		copy(mean, f.rmean)
		for j := 0; j < c; j++ {
			f.s[j] = math.Sqrt(f.rvar[j] + f.l.eps())
		}
	}
	f.y = ensure(f.y, x.N, x.Shape)
	for i := 0; i < rows; i++ {
		xr, hr, yr := x.Data[i*c:(i+1)*c], f.xh[i*c:(i+1)*c], f.y.Data[i*c:(i+1)*c]
		for j := range xr {
			h := (xr[j] - mean[j]) / f.s[j]
			hr[j] = h
			yr[j] = f.gamma[j]*h + f.beta[j]
		}
	}
	return f.y
}

// project computes dst = (u − mean(u) − xh·mean(xh⊙u)) per channel, the
// Jacobian of batch normalisation without the 1/s factor. It returns the two
// means for reuse.
func (f *bnFrame) project(dst, u []float64) (mu, mxu []float64) {
	c, rows := f.l.C, f.rowsN
	mu = make([]float64, c)
	mxu = make([]float64, c)
	for i := 0; i < rows; i++ {
		ur, hr := u[i*c:(i+1)*c], f.xh[i*c:(i+1)*c]
		for j := range ur {
			mu[j] += ur[j]
			mxu[j] += hr[j] * ur[j]
		}
	}
	for j := 0; j < c; j++ {
		mu[j] /= float64(rows)
		mxu[j] /= float64(rows)
	}
	for i := 0; i < rows; i++ {
		ur, hr, dr := u[i*c:(i+1)*c], f.xh[i*c:(i+1)*c], dst[i*c:(i+1)*c]
		for j := range ur {
			dr[j] = ur[j] - mu[j] - hr[j]*mxu[j]
		}
	}
	return mu, mxu
}

// gradX writes ∂L/∂x into gx given g = ∂L/∂x̂ = γ·gy, and returns
// mean(x̂⊙g) per channel (needed by RBackward).
func (f *bnFrame) gradX(gx, g []float64) []float64 {
	c := f.l.C
	if !f.batch {
		for i := range g {
			gx[i] = g[i] / f.s[i%c]
		}
		return nil
	}
	_, mxg := f.project(gx, g)
	for i := range gx {
		gx[i] /= f.s[i%c]
	}
	return mxg
}

func (f *bnFrame) Backward(gy *Tensor, gp []float64, needGX bool) *Tensor {
	c := f.l.C
	if gp != nil {
		gg, gb := gp[:c], gp[c:]
		for i, g := range gy.Data {
			gg[i%c] += g * f.xh[i]
			gb[i%c] += g
		}
	}
	if !needGX {
		return nil
	}
	f.gx = ensure(f.gx, f.inN, f.inShape)
	g := grow(f.tmp3, len(gy.Data))
	f.tmp3 = g
	for i, v := range gy.Data {
		g[i] = f.gamma[i%c] * v
	}
	f.gradX(f.gx.Data, g)
	return f.gx
}

// RForward: R{x̂} = P(R{x})/s (batch) or R{x}/s (eval);
// R{y} = v_γ·x̂ + γ·R{x̂} + v_β.
func (f *bnFrame) RForward(rx *Tensor, v []float64) *Tensor {
	c := f.l.C
	vg, vb := v[:c], v[c:]
	f.rxh = grow(f.rxh, len(f.xh))
	f.rs = grow(f.rs, c)
	f.haveRX = rx != nil
	if rx != nil {
		if f.batch {
			_, mxr := f.project(f.rxh, rx.Data)
			for j := 0; j < c; j++ {
				f.rs[j] = mxr[j] / f.s[j] // R{s}/s = mean(x̂⊙R{x})/s
			}
		} else {
			copy(f.rxh, rx.Data)
		}
		for i := range f.rxh {
			f.rxh[i] /= f.s[i%c]
		}
	}
	f.ry = ensure(f.ry, f.inN, f.inShape)
	for i, h := range f.xh {
		j := i % c
		f.ry.Data[i] = vg[j]*h + f.gamma[j]*f.rxh[i] + vb[j]
	}
	return f.ry
}

// RBackward differentiates Backward along (R{x}, v). With g = γ·gy,
// gx = P(g)/s, so R{gx} = −(R{s}/s)·gx + (R{g} − mean(R{g}) − R{x̂}·mean(x̂⊙g)
// − x̂·mean(R{x̂}⊙g + x̂⊙R{g}))/s.
func (f *bnFrame) RBackward(gy, rgy *Tensor, v, hv []float64, needGX bool) (*Tensor, *Tensor) {
	c := f.l.C
	if hv != nil {
		hg, hb := hv[:c], hv[c:]
		for i, g := range gy.Data {
			j := i % c
			hg[j] += rgy.Data[i]*f.xh[i] + g*f.rxh[i]
			hb[j] += rgy.Data[i]
		}
	}
	if !needGX {
		return nil, nil
	}
	vg := v[:c]
	n := len(gy.Data)
	f.gx = ensure(f.gx, f.inN, f.inShape)
	f.rgx = ensure(f.rgx, f.inN, f.inShape)
	g := grow(f.tmp3, n)
	f.tmp3 = g
	rg := make([]float64, n)
	for i, gv := range gy.Data {
		j := i % c
		g[i] = f.gamma[j] * gv
		rg[i] = vg[j]*gv + f.gamma[j]*rgy.Data[i]
	}
	mxg := f.gradX(f.gx.Data, g)
	if !f.batch {
		for i := range rg {
			f.rgx.Data[i] = rg[i] / f.s[i%c]
		}
		return f.gx, f.rgx
	}
	rows := f.rowsN
	mrg := make([]float64, c)
	m2 := make([]float64, c)
	for i := 0; i < rows; i++ {
		for j := 0; j < c; j++ {
			k := i*c + j
			mrg[j] += rg[k]
			m2[j] += f.rxh[k]*g[k] + f.xh[k]*rg[k]
		}
	}
	for j := 0; j < c; j++ {
		mrg[j] /= float64(rows)
		m2[j] /= float64(rows)
	}
	for k := range rg {
		j := k % c
		f.rgx.Data[k] = -f.rs[j]*f.gx.Data[k] + (rg[k]-mrg[j]-f.rxh[k]*mxg[j]-f.xh[k]*m2[j])/f.s[j]
	}
	return f.gx, f.rgx
}
