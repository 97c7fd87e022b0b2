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
}

func (f *affineFrame) forward(rows int, x []float64, outN int, outShape Shape) *Tensor {
	f.rows, f.xData, f.gxAt = rows, x, nil
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
	gemm(false, true, 1, general(f.rows, f.in, f.xData), general(f.out, f.in, vw), 0, general(f.rows, f.out, f.ry.Data))
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
		gemm(true, false, 1, general(f.rows, f.out, rgy), general(f.rows, f.in, f.xData), 1, general(f.out, f.in, hw))
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
