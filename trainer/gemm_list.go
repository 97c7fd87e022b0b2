package trainer

import (
	"errors"
)

// GEMM is one matrix product C (M×N) = op(A)·op(B) with inner size K, as
// the layers issue it.
type GEMM struct {
	TransA, TransB bool
	M, N, K        int
}

// Flops is 2·M·N·K.
func (g GEMM) Flops() float64 { return 2 * float64(g.M) * float64(g.N) * float64(g.K) }

// Compute sets c = op(a)·op(b) for row-major a (M×K, or K×M when TransA),
// b (K×N, or N×K when TransB) and c (M×N), through the gemm the layers
// use, so that timing it measures the BLAS at the model's own shapes. It
// panics, as gonum's BLAS does, when a slice is too short.
func (g GEMM) Compute(c, a, b []float64) {
	ar, ac := g.M, g.K
	if g.TransA {
		ar, ac = g.K, g.M
	}
	br, bc := g.K, g.N
	if g.TransB {
		br, bc = g.N, g.K
	}
	gemm(g.TransA, g.TransB, 1, general(ar, ac, a), general(br, bc, b), 0, general(g.M, g.N, c))
}

// passGEMMs lists the products of one gradient (forward + backward) and of
// one HVP with a cached forward pass (R-forward + R-backward, after the
// first HVP, which also computes gy·W once per forward pass). The first
// GEMM layer needs no input gradient and has R{x} = 0.
//
// widths, when not nil, gives for each GEMM layer in order the width of x
// that the HVP's two products with x see (Tape.HVPGEMMs: x without its
// all-zero columns); a width of 0 drops them.
func (net *Network) passGEMMs(n int, widths []int) (grad, hvp []GEMM) {
	first := true
	i := 0
	walk(net.root.Layers, func(l Layer) {
		g, ok := l.(gemmLayer)
		if !ok {
			return
		}
		pix, in, out := g.gemmShape()
		rows := n * pix
		fwd := GEMM{TransB: true, M: rows, N: out, K: in}   // x·Wᵀ, x·Vᵀ, R{x}·Wᵀ
		wgrad := GEMM{TransA: true, M: out, N: in, K: rows} // gyᵀ·x, R{gy}ᵀ·x, gyᵀ·R{x}
		xgrad := GEMM{M: rows, N: in, K: out}               // gy·W, R{gy}·W, gy·V
		grad = append(grad, fwd, wgrad)
		kx := in
		if i < len(widths) {
			kx = widths[i]
		}
		i++
		if kx > 0 {
			hvp = append(hvp, GEMM{TransB: true, M: rows, N: out, K: kx}, GEMM{TransA: true, M: out, N: kx, K: rows})
		}
		if first {
			first = false
			return
		}
		grad = append(grad, xgrad)
		hvp = append(hvp, fwd, wgrad, xgrad, xgrad)
	})
	return grad, hvp
}

// HVPGEMMs lists the matrix products of one HVP at batch n, the work the
// BLAS does; bench hvp times them alone to say how close the HVP runs to
// the BLAS's own speed.
func (net *Network) HVPGEMMs(n int) []GEMM {
	_, h := net.passGEMMs(n, nil)
	return h
}

// HVPGEMMs lists the matrix products of one HVP on the tape's current
// forward pass: as Network.HVPGEMMs, with the products with a layer's
// input narrowed to the columns that are nonzero in the batch.
func (t *Tape) HVPGEMMs() ([]GEMM, error) {
	if !t.ready {
		return nil, errors.New("trainer: HVPGEMMs before Forward")
	}
	var widths []int
	walkFrames(t.frame, func(f *affineFrame) { widths = append(widths, f.packedWidth()) })
	_, h := t.net.passGEMMs(t.out.N, widths)
	return h, nil
}

// walkFrames calls fn on the affine core of every GEMM layer's frame, in
// the order walk visits the layers.
func walkFrames(f Frame, fn func(*affineFrame)) {
	switch f := f.(type) {
	case *seqFrame:
		for _, c := range f.frames {
			walkFrames(c, fn)
		}
	case *resFrame:
		walkFrames(f.body, fn)
		if f.short != nil {
			walkFrames(f.short, fn)
		}
	case *affineFrame:
		fn(f)
	case *convFrame:
		fn(&f.aff)
	}
}

// GEMMFlops models the floating-point work of the matrix products for a
// batch of n samples: one gradient (forward + backward) and one HVP with a
// cached forward pass. It is a model, used to report GFLOP/s; elementwise
// work is not counted.
func (net *Network) GEMMFlops(n int) (grad, hvp float64) {
	g, h := net.passGEMMs(n, nil)
	for _, x := range g {
		grad += x.Flops()
	}
	for _, x := range h {
		hvp += x.Flops()
	}
	return grad, hvp
}
