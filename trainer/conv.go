package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Conv2D is a 2-D convolution with square kernels, computed as im2col
// followed by one GEMM over the whole batch. The weight has PyTorch's shape
// [out, in, k, k].
type Conv2D struct {
	In, Out         int
	Kernel, Stride  int
	Padding         int
	NoBias          bool
	inS, outS       Shape
	built           bool
	colIdx          []int32 // for each (output pixel, column): input offset within a sample, or −1
	colsPerSample   int
	kk              int
	stride1, kernel int
}

func (l *Conv2D) stride() int {
	if l.Stride <= 0 {
		return 1
	}
	return l.Stride
}

// Build computes the output shape and precomputes the im2col gather table.
func (l *Conv2D) Build(in Shape) (Shape, []ParamSpec, []ParamSpec, error) {
	if in.C != l.In {
		return Shape{}, nil, nil, fmt.Errorf("conv2d: input has %d channels, layer expects %d", in.C, l.In)
	}
	if l.Kernel <= 0 || l.Out <= 0 || l.Padding < 0 {
		return Shape{}, nil, nil, fmt.Errorf("conv2d: invalid kernel %d / out %d / padding %d", l.Kernel, l.Out, l.Padding)
	}
	s, k, p := l.stride(), l.Kernel, l.Padding
	ho := (in.H+2*p-k)/s + 1
	wo := (in.W+2*p-k)/s + 1
	if ho <= 0 || wo <= 0 {
		return Shape{}, nil, nil, fmt.Errorf("conv2d: kernel %d larger than padded input %dx%d", k, in.H, in.W)
	}
	l.inS, l.outS = in, Shape{H: ho, W: wo, C: l.Out}
	cols := l.In * k * k
	l.kk = cols
	l.colIdx = make([]int32, ho*wo*cols)
	for oh := 0; oh < ho; oh++ {
		for ow := 0; ow < wo; ow++ {
			r := (oh*wo + ow) * cols
			for c := 0; c < l.In; c++ {
				for i := 0; i < k; i++ {
					for j := 0; j < k; j++ {
						hi, wi := oh*s-p+i, ow*s-p+j
						idx := int32(-1)
						if hi >= 0 && hi < in.H && wi >= 0 && wi < in.W {
							idx = int32((hi*in.W+wi)*in.C + c)
						}
						l.colIdx[r+c*k*k+i*k+j] = idx
					}
				}
			}
		}
	}
	ps := []ParamSpec{{Name: "weight", Shape: []int{l.Out, l.In, k, k}}}
	if !l.NoBias {
		ps = append(ps, ParamSpec{Name: "bias", Shape: []int{l.Out}})
	}
	l.built = true
	return l.outS, ps, nil, nil
}

// Init follows PyTorch's default: U(−1/√fan_in, 1/√fan_in).
func (l *Conv2D) Init(p, _ []float64, rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.kk))
	for i := range p {
		p[i] = (2*rng.Float64() - 1) * bound
	}
}

// NewFrame binds the layer.
func (l *Conv2D) NewFrame(p, _ []float64) Frame {
	n := l.kk * l.Out
	return &convFrame{l: l, aff: affineFrame{in: l.kk, out: l.Out, w: p[:n], b: p[n:]}}
}

type convFrame struct {
	l         *Conv2D
	aff       affineFrame
	x         *Tensor
	col, rcol []float64
	gcol      []float64
	rgcol     []float64
	gx, rgx   *Tensor
}

// im2col gathers x (N samples) into dst (N·Ho·Wo rows × In·k·k).
func (l *Conv2D) im2col(dst, x []float64, n int) []float64 {
	per := len(l.colIdx)
	if cap(dst) < n*per {
		dst = make([]float64, n*per)
	}
	dst = dst[:n*per]
	inSize := l.inS.Size()
	for s := 0; s < n; s++ {
		xs := x[s*inSize : (s+1)*inSize]
		d := dst[s*per : (s+1)*per]
		for i, idx := range l.colIdx {
			if idx >= 0 {
				d[i] = xs[idx]
			} else {
				d[i] = 0
			}
		}
	}
	return dst
}

// col2im is the adjoint of im2col: it scatters-adds cols into dst.
func (l *Conv2D) col2im(dst, cols []float64, n int) {
	clear(dst)
	per := len(l.colIdx)
	inSize := l.inS.Size()
	for s := 0; s < n; s++ {
		xs := dst[s*inSize : (s+1)*inSize]
		c := cols[s*per : (s+1)*per]
		for i, idx := range l.colIdx {
			if idx >= 0 {
				xs[idx] += c[i]
			}
		}
	}
}

func (f *convFrame) Forward(x *Tensor, _ Mode) *Tensor {
	f.x = x
	f.col = f.l.im2col(f.col, x.Data, x.N)
	return f.aff.forward(x.N*f.l.outS.H*f.l.outS.W, f.col, x.N, f.l.outS)
}

func (f *convFrame) Backward(gy *Tensor, gp []float64, needGX bool) *Tensor {
	if needGX {
		f.gcol = growNoClear(f.gcol, len(f.col))
	}
	f.aff.backward(gy.Data, gp, needGX, f.gcol)
	if !needGX {
		return nil
	}
	f.gx = ensure(f.gx, f.x.N, f.x.Shape)
	f.l.col2im(f.gx.Data, f.gcol, f.x.N)
	return f.gx
}

func (f *convFrame) RForward(rx *Tensor, v []float64) *Tensor {
	var r []float64
	if rx != nil {
		f.rcol = f.l.im2col(f.rcol, rx.Data, rx.N)
		r = f.rcol
	}
	return f.aff.rforward(r, v, f.x.N, f.l.outS)
}

func (f *convFrame) RBackward(gy, rgy *Tensor, v, hv []float64, needGX bool) (*Tensor, *Tensor) {
	if needGX {
		f.gcol = growNoClear(f.gcol, len(f.col))
		f.rgcol = growNoClear(f.rgcol, len(f.col))
	}
	f.aff.rbackward(gy.Data, rgy.Data, v, hv, needGX, f.gcol, f.rgcol)
	if !needGX {
		return nil, nil
	}
	f.gx = ensure(f.gx, f.x.N, f.x.Shape)
	f.rgx = ensure(f.rgx, f.x.N, f.x.Shape)
	f.l.col2im(f.gx.Data, f.gcol, f.x.N)
	f.l.col2im(f.rgx.Data, f.rgcol, f.x.N)
	return f.gx, f.rgx
}

func growNoClear(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n)
	}
	return b[:n]
}
