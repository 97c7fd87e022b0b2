package main

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// mlp is a user's own model: a one-hidden-layer tanh network with a softmax
// cross-entropy loss, its forward and backward passes written by hand over
// gonum's BLAS. Nothing here knows hessmon.
//
// The parameters are one flat vector laid out as PyTorch's state_dict of
// nn.Sequential(Linear(in, hidden), Tanh(), Linear(hidden, out)) would be:
// fc1.weight (hidden×in, row-major), fc1.bias, fc2.weight (out×hidden),
// fc2.bias. hessmon's trainer uses the same layout, which is what lets the
// test load the same weights into it.
type mlp struct {
	in, hidden, out int
}

func (m mlp) dim() int { return m.hidden*m.in + m.hidden + m.out*m.hidden + m.out }

func (m mlp) String() string {
	return fmt.Sprintf("mlp %d-%d-%d tanh (own loop)", m.in, m.hidden, m.out)
}

// views splits p into the four tensors.
func (m mlp) views(p []float64) (w1, b1, w2, b2 []float64) {
	i := 0
	next := func(n int) []float64 { s := p[i : i+n]; i += n; return s }
	return next(m.hidden * m.in), next(m.hidden), next(m.out * m.hidden), next(m.out)
}

// init draws PyTorch's default Linear initialisation, U(±1/√fan_in).
func (m mlp) init(p []float64, uniform func() float64) {
	w1, b1, w2, b2 := m.views(p)
	for _, t := range []struct {
		s     []float64
		fanIn int
	}{{w1, m.in}, {b1, m.in}, {w2, m.hidden}, {b2, m.hidden}} {
		bound := 1 / math.Sqrt(float64(t.fanIn))
		for i := range t.s {
			t.s[i] = bound * (2*uniform() - 1)
		}
	}
}

// lossGrad returns the mean cross-entropy of the n samples in x (n×in,
// row-major) with labels y, and writes its gradient with respect to p into
// grad when grad is not nil. It allocates its own work space, so concurrent
// calls are safe: the monitor's asynchronous probe calls it while training
// calls it too.
func (m mlp) lossGrad(grad, p, x []float64, y []int) float64 {
	n := len(y)
	_, _, w2, _ := m.views(p)
	a1, z2 := m.forward(p, x, n)
	var loss float64
	inv := 1 / float64(n)
	for i := range n {
		row := z2[i*m.out : (i+1)*m.out]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(v - mx)
		}
		lse := mx + math.Log(sum)
		loss += lse - row[y[i]]
		if grad != nil { // row becomes dL/dz2 = (softmax − onehot)/n
			for j, v := range row {
				row[j] = math.Exp(v-lse) * inv
			}
			row[y[i]] -= inv
		}
	}
	if grad == nil {
		return loss * inv
	}
	g1, gb1, g2, gb2 := m.views(grad)
	gemm(blas.Trans, blas.NoTrans, m.out, m.hidden, n, z2, a1, 0, g2) // dW2 = dz2ᵀ·a1
	colSum(gb2, z2, n, m.out)
	dz1 := make([]float64, n*m.hidden)
	gemm(blas.NoTrans, blas.NoTrans, n, m.hidden, m.out, z2, w2, 0, dz1) // da1 = dz2·W2
	for i, a := range a1 {
		dz1[i] *= 1 - a*a
	}
	gemm(blas.Trans, blas.NoTrans, m.hidden, m.in, n, dz1, x, 0, g1) // dW1 = dz1ᵀ·x
	colSum(gb1, dz1, n, m.hidden)
	return loss * inv
}

// forward returns the hidden activations a1 = tanh(x·W1ᵀ + b1) and the
// logits z2 = a1·W2ᵀ + b2 of the n samples in x.
func (m mlp) forward(p, x []float64, n int) (a1, z2 []float64) {
	w1, b1, w2, b2 := m.views(p)
	a1 = make([]float64, n*m.hidden)
	z2 = make([]float64, n*m.out)
	for i := range n {
		copy(a1[i*m.hidden:], b1)
		copy(z2[i*m.out:], b2)
	}
	gemm(blas.NoTrans, blas.Trans, n, m.hidden, m.in, x, w1, 1, a1)
	for i, v := range a1 {
		a1[i] = math.Tanh(v)
	}
	gemm(blas.NoTrans, blas.Trans, n, m.out, m.hidden, a1, w2, 1, z2)
	return a1, z2
}

// predict returns the index of the largest logit of each sample.
func (m mlp) predict(p, x []float64, n int) []int {
	_, z2 := m.forward(p, x, n)
	out := make([]int, n)
	for i := range n {
		row := z2[i*m.out : (i+1)*m.out]
		for j, v := range row {
			if v > row[out[i]] {
				out[i] = j
			}
		}
	}
	return out
}

// gemm computes c = op(a)·op(b) + beta·c for the row-major rows×cols c,
// where op(a) is r×inner and op(b) is inner×cols.
func gemm(ta, tb blas.Transpose, rows, cols, inner int, a, b []float64, beta float64, c []float64) {
	ga := blas64.General{Rows: rows, Cols: inner, Stride: inner, Data: a}
	if ta == blas.Trans {
		ga = blas64.General{Rows: inner, Cols: rows, Stride: rows, Data: a}
	}
	gb := blas64.General{Rows: inner, Cols: cols, Stride: cols, Data: b}
	if tb == blas.Trans {
		gb = blas64.General{Rows: cols, Cols: inner, Stride: inner, Data: b}
	}
	blas64.Gemm(ta, tb, 1, ga, gb, beta, blas64.General{Rows: rows, Cols: cols, Stride: cols, Data: c})
}

// colSum writes the column sums of the rows×cols matrix a into dst.
func colSum(dst, a []float64, rows, cols int) {
	clear(dst)
	for i := range rows {
		for j, v := range a[i*cols : (i+1)*cols] {
			dst[j] += v
		}
	}
}
