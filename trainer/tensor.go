package trainer

import (
	"runtime"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/data"
)

// Shape is the per-sample shape of an activation: height, width, channels.
// Dense activations have H = W = 1. It is the data package's shape, so a
// data set's samples and a layer's activations are described alike.
type Shape = data.Shape

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
	k := a.Cols
	if tA {
		k = a.Rows
	}
	switch impl := blas64.Implementation().(type) {
	case gonum.Implementation:
		if c.Rows*c.Cols*k >= serialGemmBelow {
			blas64.Gemm(ta, tb, alpha, a, b, beta, c) // gonum's own goroutines
			return
		}
	case interface{ Threads() int }:
		if impl.Threads() == 1 && c.Rows*c.Cols*k >= splitGemmAbove {
			splitGemm(ta, tb, alpha, a, b, beta, c)
			return
		}
		blas64.Gemm(ta, tb, alpha, a, b, beta, c)
		return
	default:
		blas64.Gemm(ta, tb, alpha, a, b, beta, c)
		return
	}
	// Tiles of at most gemmTileRows × gemmTileCols outputs are below the
	// size at which gonum's Dgemm fans out to goroutines, so each call runs
	// on the calling goroutine.
	for i0 := 0; i0 < c.Rows; i0 += gemmTileRows {
		i1 := min(c.Rows, i0+gemmTileRows)
		var as blas64.General
		if tA {
			as = blas64.General{Rows: a.Rows, Cols: i1 - i0, Stride: a.Stride, Data: a.Data[i0:]}
		} else {
			as = blas64.General{Rows: i1 - i0, Cols: a.Cols, Stride: a.Stride, Data: a.Data[i0*a.Stride:]}
		}
		for j0 := 0; j0 < c.Cols; j0 += gemmTileCols {
			j1 := min(c.Cols, j0+gemmTileCols)
			var bs blas64.General
			if tB {
				bs = blas64.General{Rows: j1 - j0, Cols: b.Cols, Stride: b.Stride, Data: b.Data[j0*b.Stride:]}
			} else {
				bs = blas64.General{Rows: b.Rows, Cols: j1 - j0, Stride: b.Stride, Data: b.Data[j0:]}
			}
			cs := blas64.General{Rows: i1 - i0, Cols: j1 - j0, Stride: c.Stride, Data: c.Data[i0*c.Stride+j0:]}
			blas64.Gemm(ta, tb, alpha, as, bs, beta, cs)
		}
	}
}

// splitGemmAbove is the size m·n·k above which a product on a one-thread
// library is split over GOMAXPROCS goroutines (a 64·128·128 product takes
// about 20 µs; a goroutine costs about 1 µs).
const splitGemmAbove = 1 << 20

// splitGemm computes C = alpha·op(A)·op(B) + beta·C as independent
// products on blocks of rows (or columns) of C, handed out from a shared
// counter to the calling goroutine and GOMAXPROCS−1 helpers. The caller
// takes blocks too, so a helper that the OS schedules late costs nothing:
// the caller simply takes more blocks (on a loaded machine a fixed split
// ran at one core's speed, waiting for the helper). The split changes which
// thread computes each entry of C and, at most, its rounding.
func splitGemm(ta, tb blas.Transpose, alpha float64, a, b blas64.General, beta float64, c blas64.General) {
	workers := runtime.GOMAXPROCS(0)
	byRows := c.Rows >= c.Cols
	n := c.Cols
	if byRows {
		n = c.Rows
	}
	parts := min(splitBlocksPerWorker*workers, n/16)
	if workers < 2 || parts < 2 {
		blas64.Gemm(ta, tb, alpha, a, b, beta, c)
		return
	}
	job := &gemmJob{ta: ta, tb: tb, alpha: alpha, beta: beta, a: a, b: b, c: c, byRows: byRows, n: n, parts: parts}
	helpers := min(workers, parts) - 1
	job.wg.Add(helpers)
	for range helpers {
		go job.help()
	}
	job.run()
	job.wg.Wait()
}

// splitBlocksPerWorker: two blocks per worker balance a late helper at the
// price of one extra library call per worker (≈ 2 µs).
const splitBlocksPerWorker = 2

type gemmJob struct {
	ta, tb      blas.Transpose
	alpha, beta float64
	a, b, c     blas64.General
	byRows      bool
	n, parts    int
	next        atomic.Int64
	wg          sync.WaitGroup
}

func (j *gemmJob) help() {
	defer j.wg.Done()
	j.run()
}

// run computes blocks until none is left.
func (j *gemmJob) run() {
	for {
		p := int(j.next.Add(1)) - 1
		if p >= j.parts {
			return
		}
		lo, hi := p*j.n/j.parts, (p+1)*j.n/j.parts
		a, b, c := j.a, j.b, j.c
		if j.byRows {
			if j.ta == blas.Trans {
				a = blas64.General{Rows: a.Rows, Cols: hi - lo, Stride: a.Stride, Data: a.Data[lo:]}
			} else {
				a = blas64.General{Rows: hi - lo, Cols: a.Cols, Stride: a.Stride, Data: a.Data[lo*a.Stride:]}
			}
			c = blas64.General{Rows: hi - lo, Cols: c.Cols, Stride: c.Stride, Data: c.Data[lo*c.Stride:]}
		} else {
			if j.tb == blas.Trans {
				b = blas64.General{Rows: hi - lo, Cols: b.Cols, Stride: b.Stride, Data: b.Data[lo*b.Stride:]}
			} else {
				b = blas64.General{Rows: b.Rows, Cols: hi - lo, Stride: b.Stride, Data: b.Data[lo:]}
			}
			c = blas64.General{Rows: c.Rows, Cols: hi - lo, Stride: c.Stride, Data: c.Data[lo:]}
		}
		blas64.Gemm(j.ta, j.tb, j.alpha, a, b, j.beta, c)
	}
}

// gonum's Dgemm runs serially when the output has fewer than 4 blocks of
// 64×64; a 64×192 tile has 3.
const gemmTileRows, gemmTileCols = 64, 192

// addBias adds b to every row of the rows×len(b) matrix y.
func addBias(y []float64, b []float64) {
	c := len(b)
	if c == 0 {
		return
	}
	parallelFor(len(y)/c, c, func(lo, hi int) {
		for i := lo * c; i < hi*c; i += c {
			row := y[i : i+c]
			for j, v := range b {
				row[j] += v
			}
		}
	})
}

// parallelFor runs fn over [0, n) in GOMAXPROCS contiguous pieces on
// goroutines when the n items of width values each are enough to pay for
// them (the elementwise passes of an HVP at batch 1000 are 128k values,
// about 0.3 ms each on one core, memory-bound), else on the caller.
func parallelFor(n, width int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers < 2 || n*width < parallelMinValues {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() {
			defer wg.Done()
			fn(w*n/workers, (w+1)*n/workers)
		}()
	}
	fn(0, n/workers)
	wg.Wait()
}

// parallelMinValues: below 2¹⁵ values a pass takes under ~50 µs and a
// goroutine hand-off is not worth its wake-up latency.
const parallelMinValues = 1 << 15

// sumRows accumulates the column sums of the rows×len(dst) matrix y into dst.
func sumRows(dst []float64, y []float64) {
	c := len(dst)
	if c == 0 {
		return
	}
	sum := func(dst []float64, lo, hi int) {
		for i := lo * c; i < hi*c; i += c {
			row := y[i : i+c]
			for j, v := range row {
				dst[j] += v
			}
		}
	}
	rows := len(y) / c
	workers := min(runtime.GOMAXPROCS(0), rows)
	if workers < 2 || len(y) < parallelMinValues {
		sum(dst, 0, rows)
		return
	}
	// The caller sums its rows into dst, each helper into its own vector;
	// those are added at the end (which changes only the rounding of dst).
	parts := make([][]float64, workers)
	var wg sync.WaitGroup
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() {
			defer wg.Done()
			parts[w] = make([]float64, c)
			sum(parts[w], w*rows/workers, (w+1)*rows/workers)
		}()
	}
	sum(dst, 0, rows/workers)
	wg.Wait()
	for _, p := range parts[1:] {
		floats.Add(dst, p)
	}
}
