package trainer

import (
	"runtime"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// sgemm computes C = op(A)·op(B) + beta·C on row-major float32 slices, C
// being m×n and the inner size k, through the process's BLAS (blas32, which
// rtblas points at the same library as blas64). As gemm does for float64,
// a large product on a one-thread library is split over GOMAXPROCS
// goroutines by blocks of C.
func sgemm(tA, tB bool, m, n, k int, a, b []float32, beta float32, c []float32) {
	ta, tb := blas.NoTrans, blas.NoTrans
	ar, ac, br, bc := m, k, k, n
	if tA {
		ta, ar, ac = blas.Trans, k, m
	}
	if tB {
		tb, br, bc = blas.Trans, n, k
	}
	A := blas32.General{Rows: ar, Cols: ac, Stride: ac, Data: a[:ar*ac]}
	B := blas32.General{Rows: br, Cols: bc, Stride: bc, Data: b[:br*bc]}
	C := blas32.General{Rows: m, Cols: n, Stride: n, Data: c[:m*n]}
	impl, ok := blas32.Implementation().(interface{ Threads() int })
	workers := runtime.GOMAXPROCS(0)
	if !ok || impl.Threads() != 1 || m*n*k < splitGemmAbove || workers < 2 {
		blas32.Gemm(ta, tb, 1, A, B, beta, C)
		return
	}
	byRows := m >= n
	size := n
	if byRows {
		size = m
	}
	parts := min(splitBlocksPerWorker*workers, size/16)
	if parts < 2 {
		blas32.Gemm(ta, tb, 1, A, B, beta, C)
		return
	}
	var next atomic.Int64
	run := func() {
		for {
			p := int(next.Add(1)) - 1
			if p >= parts {
				return
			}
			lo, hi := p*size/parts, (p+1)*size/parts
			a, b, c := A, B, C
			if byRows {
				if tA {
					a = blas32.General{Rows: a.Rows, Cols: hi - lo, Stride: a.Stride, Data: a.Data[lo:]}
				} else {
					a = blas32.General{Rows: hi - lo, Cols: a.Cols, Stride: a.Stride, Data: a.Data[lo*a.Stride:]}
				}
				c = blas32.General{Rows: hi - lo, Cols: c.Cols, Stride: c.Stride, Data: c.Data[lo*c.Stride:]}
			} else {
				if tB {
					b = blas32.General{Rows: hi - lo, Cols: b.Cols, Stride: b.Stride, Data: b.Data[lo*b.Stride:]}
				} else {
					b = blas32.General{Rows: b.Rows, Cols: hi - lo, Stride: b.Stride, Data: b.Data[lo:]}
				}
				c = blas32.General{Rows: c.Rows, Cols: hi - lo, Stride: c.Stride, Data: c.Data[lo:]}
			}
			blas32.Gemm(ta, tb, 1, a, b, beta, c)
		}
	}
	var wg sync.WaitGroup
	for range min(workers, parts) - 1 {
		wg.Go(run)
	}
	run()
	wg.Wait()
}
