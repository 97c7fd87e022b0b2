package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Linear is y = x·Wᵀ + b applied to the channel dimension of every row, with
// W stored [out, in] as in PyTorch.
type Linear struct {
	In, Out int
	NoBias  bool
	pix     int // rows per sample (H·W of the input)
}

// Build checks that the input has In channels (dense inputs: H = W = 1).
func (l *Linear) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	if in.C != l.In {
		return Shape{}, nil, nil, fmt.Errorf("linear: input has %d features, layer expects %d", in.C, l.In)
	}
	if l.In <= 0 || l.Out <= 0 {
		return Shape{}, nil, nil, fmt.Errorf("linear: sizes must be positive, got %d→%d", l.In, l.Out)
	}
	ps := []ParamSpec{{Name: "weight", Shape: []int{l.Out, l.In}}}
	if !l.NoBias {
		ps = append(ps, ParamSpec{Name: "bias", Shape: []int{l.Out}})
	}
	l.pix = in.H * in.W
	return Shape{H: in.H, W: in.W, C: l.Out}, ps, nil, nil
}

// Init follows PyTorch's default: U(−1/√in, 1/√in) for weight and bias.
func (l *Linear) Init(p, _ []float64, rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.In))
	for i := range p {
		p[i] = (2*rng.Float64() - 1) * bound
	}
}

// NewFrame binds the layer to its parameters.
func (l *Linear) NewFrame(p, _ []float64) Frame {
	return &affineFrame{in: l.In, out: l.Out, w: p[:l.In*l.Out], b: p[l.In*l.Out:]}
}

// affineFrame is the shared core of Linear and Conv2D: on a matrix of rows
// (samples, or output pixels after im2col) it computes y = x·Wᵀ + b.
type affineFrame struct {
	in, out int
	w, b    []float64

	x, rx        *Tensor // inputs of the current pass (not owned)
	y, ry        *Tensor
	gx, rgx      *Tensor
	outShape     Shape
	rows         int
	xData, rData []float64 // the matrices the GEMMs see (x or im2col(x))
	// gxAt is &gx[0] when that buffer holds gy·W for the current forward
	// pass. gy is the loss gradient propagated down, fixed between two
	// forward passes, so every HVP after the first skips that GEMM.
	gxAt *float64
	// pack is x without its all-zero columns, for the HVP's two products
	// with x; packFor is &xData[0] of the forward pass it was built for
	// (nil after a new forward pass), pack.cols nil when x has too few zero
	// columns to pay.
	pack    inputPack
	packFor *float64
}

// inputPack holds x (rows × in) restricted to the columns that are nonzero
// somewhere in the batch. Such a column contributes nothing to x·Vᵀ, and
// its column of gyᵀ·x is zero, so the HVP's products with x can skip it
// exactly: on MNIST 175 of 784 pixels are zero in all of the first 1,000
// training images and 268 in the first 128 (the probe batch), 22% and 34%
// of the first layer's work. The batch is fixed across the HVPs of a probe,
// so the scan and the copy are paid once per forward pass. (Entries of v
// on a skipped column do not reach H·v, as in exact arithmetic: a NaN
// there no longer turns the product into NaN.)
type inputPack struct {
	cols   []int     // kept columns, ascending
	x      []float64 // rows × len(cols)
	vw, hw []float64 // out × len(cols): V's kept columns, and R{gW}'s
}

// packMinZeroFrac is the least share of zero columns for which packing
// pays for the gather of V and the scatter of R{gW} (out·k each).
const packMinZeroFrac = 1.0 / 16

// packed returns the pack of the current forward pass's x, building it on
// first use, or nil when x has too few zero columns.
func (f *affineFrame) packed() *inputPack {
	if len(f.xData) == 0 {
		return nil
	}
	if f.packFor != &f.xData[0] {
		f.packFor = &f.xData[0]
		f.buildPack()
	}
	if f.pack.cols == nil {
		return nil
	}
	return &f.pack
}

func (f *affineFrame) buildPack() {
	p := &f.pack
	used := make([]bool, f.in)
	x := f.xData[:f.rows*f.in]
	for i := 0; i < len(x); i += f.in {
		for j, v := range x[i : i+f.in] {
			if v != 0 {
				used[j] = true
			}
		}
	}
	p.cols = p.cols[:0]
	for j, u := range used {
		if u {
			p.cols = append(p.cols, j)
		}
	}
	k := len(p.cols)
	if float64(f.in-k) < packMinZeroFrac*float64(f.in) {
		p.cols = nil
		return
	}
	if k == 0 {
		p.cols = p.cols[:0:0] // all zero: no products with x at all
	}
	p.x = grow(p.x, f.rows*k)
	for i := range f.rows {
		row, dst := x[i*f.in:(i+1)*f.in], p.x[i*k:(i+1)*k]
		for l, j := range p.cols {
			dst[l] = row[j]
		}
	}
	p.vw, p.hw = grow(p.vw, f.out*k), grow(p.hw, f.out*k)
}

// packedWidth is the width of x the HVP's products with x see.
func (f *affineFrame) packedWidth() int {
	if p := f.packed(); p != nil {
		return len(p.cols)
	}
	return f.in
}

func (f *affineFrame) forward(rows int, x []float64, outN int, outShape Shape) *Tensor {
	f.rows, f.xData, f.gxAt, f.packFor = rows, x, nil, nil
	f.y = ensure(f.y, outN, outShape)
	gemm(false, true, 1, general(rows, f.in, x), general(f.out, f.in, f.w), 0, general(rows, f.out, f.y.Data))
	if len(f.b) > 0 {
		addBias(f.y.Data, f.b)
	}
	return f.y
}

// rforward: R{y} = R{x}·Wᵀ + x·Vᵀ + v_b. rx may be nil (zero).
func (f *affineFrame) rforward(rx []float64, v []float64, outN int, outShape Shape) *Tensor {
	f.rData = rx
	f.ry = ensure(f.ry, outN, outShape)
	vw, vb := v[:f.in*f.out], v[f.in*f.out:]
	if p := f.packed(); p != nil {
		k := len(p.cols)
		for o := range f.out {
			src, dst := vw[o*f.in:(o+1)*f.in], p.vw[o*k:(o+1)*k]
			for l, j := range p.cols {
				dst[l] = src[j]
			}
		}
		if k > 0 {
			gemm(false, true, 1, general(f.rows, k, p.x), general(f.out, k, p.vw), 0, general(f.rows, f.out, f.ry.Data))
		} else {
			clear(f.ry.Data)
		}
	} else {
		gemm(false, true, 1, general(f.rows, f.in, f.xData), general(f.out, f.in, vw), 0, general(f.rows, f.out, f.ry.Data))
	}
	if rx != nil {
		gemm(false, true, 1, general(f.rows, f.in, rx), general(f.out, f.in, f.w), 1, general(f.rows, f.out, f.ry.Data))
	}
	if len(vb) > 0 {
		addBias(f.ry.Data, vb)
	}
	return f.ry
}

// backward: gW += gyᵀ·x, gb += Σ gy; returns gy·W (rows×in) when needGX.
func (f *affineFrame) backward(gy []float64, gp []float64, needGX bool, gx []float64) {
	if gp != nil {
		gw, gb := gp[:f.in*f.out], gp[f.in*f.out:]
		gemm(true, false, 1, general(f.rows, f.out, gy), general(f.rows, f.in, f.xData), 1, general(f.out, f.in, gw))
		if len(gb) > 0 {
			sumRows(gb, gy)
		}
	}
	if needGX {
		gemm(false, false, 1, general(f.rows, f.out, gy), general(f.out, f.in, f.w), 0, general(f.rows, f.in, gx))
		f.gxAt = nil // gy may not be the one the HVPs propagate
	}
}

// rbackward: R{gW} = R{gy}ᵀ·x + gyᵀ·R{x}, R{gb} = Σ R{gy};
// R{gx} = R{gy}·W + gy·V_W, and gx = gy·W (computed on the first HVP after a
// forward pass, then reused: gy does not depend on v).
func (f *affineFrame) rbackward(gy, rgy, v, hv []float64, needGX bool, gx, rgx []float64) {
	if hv != nil {
		hw, hb := hv[:f.in*f.out], hv[f.in*f.out:]
		if p := f.packed(); p != nil {
			if k := len(p.cols); k > 0 {
				gemm(true, false, 1, general(f.rows, f.out, rgy), general(f.rows, k, p.x), 0, general(f.out, k, p.hw))
				for o := range f.out {
					src, dst := p.hw[o*k:(o+1)*k], hw[o*f.in:(o+1)*f.in]
					for l, j := range p.cols {
						dst[j] += src[l]
					}
				}
			}
		} else {
			gemm(true, false, 1, general(f.rows, f.out, rgy), general(f.rows, f.in, f.xData), 1, general(f.out, f.in, hw))
		}
		if f.rData != nil {
			gemm(true, false, 1, general(f.rows, f.out, gy), general(f.rows, f.in, f.rData), 1, general(f.out, f.in, hw))
		}
		if len(hb) > 0 {
			sumRows(hb, rgy)
		}
	}
	if needGX {
		w := general(f.out, f.in, f.w)
		if f.gxAt != &gx[0] {
			gemm(false, false, 1, general(f.rows, f.out, gy), w, 0, general(f.rows, f.in, gx))
			f.gxAt = &gx[0]
		}
		gemm(false, false, 1, general(f.rows, f.out, rgy), w, 0, general(f.rows, f.in, rgx))
		gemm(false, false, 1, general(f.rows, f.out, gy), general(f.out, f.in, v[:f.in*f.out]), 1, general(f.rows, f.in, rgx))
	}
}

func (f *affineFrame) Forward(x *Tensor, _ Mode) *Tensor {
	f.x = x
	return f.forward(x.Rows(), x.Data, x.N, Shape{H: x.H, W: x.W, C: f.out})
}

func (f *affineFrame) Backward(gy *Tensor, gp []float64, needGX bool) *Tensor {
	if needGX {
		f.gx = ensure(f.gx, f.x.N, f.x.Shape)
	}
	f.backward(gy.Data, gp, needGX, dataOf(f.gx, needGX))
	if !needGX {
		return nil
	}
	return f.gx
}

func (f *affineFrame) RForward(rx *Tensor, v []float64) *Tensor {
	f.rx = rx
	var r []float64
	if rx != nil {
		r = rx.Data
	}
	return f.rforward(r, v, f.x.N, f.y.Shape)
}

func (f *affineFrame) RBackward(gy, rgy *Tensor, v, hv []float64, needGX bool) (*Tensor, *Tensor) {
	if needGX {
		f.gx = ensure(f.gx, f.x.N, f.x.Shape)
		f.rgx = ensure(f.rgx, f.x.N, f.x.Shape)
	}
	f.rbackward(gy.Data, rgy.Data, v, hv, needGX, dataOf(f.gx, needGX), dataOf(f.rgx, needGX))
	if !needGX {
		return nil, nil
	}
	return f.gx, f.rgx
}

func dataOf(t *Tensor, ok bool) []float64 {
	if !ok || t == nil {
		return nil
	}
	return t.Data
}
