package trainer

import (
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// Shape is the per-sample shape of an activation: height, width, channels.
// Dense activations have H = W = 1.
type Shape struct{ H, W, C int }

// Size is the number of values per sample.
func (s Shape) Size() int { return s.H * s.W * s.C }

func (s Shape) String() string {
	if s.H == 1 && s.W == 1 {
		return fmt.Sprintf("[%d]", s.C)
	}
	return fmt.Sprintf("[%d×%d×%d]", s.C, s.H, s.W)
}

// Tensor is a batch of activations stored NHWC: N·H·W rows of C values.
//
// Storing channels last lets every per-channel layer (Linear on dense inputs,
// BatchNorm for dense and conv inputs, activations) treat the data as one
// row-major matrix, and makes Conv2D a single GEMM over the whole batch.
type Tensor struct {
	N int
	Shape
	Data []float64
}

// NewTensor allocates a zero tensor.
func NewTensor(n int, s Shape) *Tensor {
	return &Tensor{N: n, Shape: s, Data: make([]float64, n*s.Size())}
}

// Rows is N·H·W, the number of C-wide rows.
func (t *Tensor) Rows() int { return t.N * t.H * t.W }

// ensure returns t resized to (n, s), reusing its storage when possible. It is
// how frames keep their buffers across calls without reallocating.
func ensure(t *Tensor, n int, s Shape) *Tensor {
	size := n * s.Size()
	if t == nil {
		return NewTensor(n, s)
	}
	if cap(t.Data) < size {
		t.Data = make([]float64, size)
	}
	t.Data = t.Data[:size]
	t.N, t.Shape = n, s
	return t
}

// general views a row-major slice as a blas64 matrix.
func general(rows, cols int, data []float64) blas64.General {
	return blas64.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

// gemm computes C = alpha·op(A)·op(B) + beta·C on row-major slices.
func gemm(tA, tB bool, alpha float64, a blas64.General, b blas64.General, beta float64, c blas64.General) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	blas64.Gemm(ta, tb, alpha, a, b, beta, c)
}

// addBias adds b to every row of the rows×len(b) matrix y.
func addBias(y []float64, b []float64) {
	c := len(b)
	for i := 0; i+c <= len(y); i += c {
		row := y[i : i+c]
		for j, v := range b {
			row[j] += v
		}
	}
}

// sumRows accumulates the column sums of the rows×len(dst) matrix y into dst.
func sumRows(dst []float64, y []float64) {
	c := len(dst)
	for i := 0; i+c <= len(y); i += c {
		row := y[i : i+c]
		for j, v := range row {
			dst[j] += v
		}
	}
}
