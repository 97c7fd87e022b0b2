package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
)

// TestGemmTiles checks the tiled serial path against one blas64.Gemm call
// for every transpose combination and shapes that cut tiles unevenly.
func TestGemmTiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randm := func(r, c int) blas64.General {
		g := blas64.General{Rows: r, Cols: c, Stride: c, Data: make([]float64, r*c)}
		for i := range g.Data {
			g.Data[i] = rng.NormFloat64()
		}
		return g
	}
	for _, sz := range [][3]int{{1, 1, 1}, {63, 191, 5}, {64, 192, 7}, {130, 400, 33}, {200, 97, 129}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				a := randm(m, k)
				if tA {
					a = randm(k, m)
				}
				b := randm(k, n)
				if tB {
					b = randm(n, k)
				}
				c := randm(m, n)
				want := blas64.General{Rows: m, Cols: n, Stride: n, Data: append([]float64(nil), c.Data...)}
				ta, tb := blas.NoTrans, blas.NoTrans
				if tA {
					ta = blas.Trans
				}
				if tB {
					tb = blas.Trans
				}
				blas64.Gemm(ta, tb, 0.7, a, b, 0.3, want)
				gemm(tA, tB, 0.7, a, b, 0.3, c)
				for i := range c.Data {
					if d := math.Abs(c.Data[i] - want.Data[i]); d > 1e-12*(1+math.Abs(want.Data[i])) {
						t.Fatalf("m=%d n=%d k=%d tA=%v tB=%v: entry %d is %v, want %v", m, n, k, tA, tB, i, c.Data[i], want.Data[i])
					}
				}
			}
		}
	}
}

// BenchmarkGemm compares gemm (serial tiles below serialGemmBelow) with a
// single blas64.Gemm call on the MLP's weight-gradient shapes.
func BenchmarkGemm(b *testing.B) {
	for _, rows := range []int{64, 128, 1000} {
		x := blas64.General{Rows: rows, Cols: 784, Stride: 784, Data: make([]float64, rows*784)}
		g := blas64.General{Rows: rows, Cols: 128, Stride: 128, Data: make([]float64, rows*128)}
		w := blas64.General{Rows: 128, Cols: 784, Stride: 784, Data: make([]float64, 128*784)}
		for i := range x.Data {
			x.Data[i] = float64(i%7) - 3
		}
		for i := range g.Data {
			g.Data[i] = float64(i%5) - 2
		}
		b.Run(fmt.Sprintf("gemm/rows=%d", rows), func(b *testing.B) {
			for b.Loop() {
				gemm(true, false, 1, g, x, 0, w)
			}
		})
		b.Run(fmt.Sprintf("blas64/rows=%d", rows), func(b *testing.B) {
			for b.Loop() {
				blas64.Gemm(blas.Trans, blas.NoTrans, 1, g, x, 0, w)
			}
		})
	}
}
