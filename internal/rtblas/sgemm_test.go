package rtblas

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestSgemmAgainstFloat64: the library's sgemm against gonum's Dgemm on
// the same (float32-representable) operands, for both transposes, strides
// and sizes above and below the forwarding threshold. The float32 result
// carries rounding of order k·2⁻²⁴ relative to the magnitudes summed.
func TestSgemmAgainstFloat64(t *testing.T) {
	ob := openBLAS(t)
	var g gonum.Implementation
	rng := rand.New(rand.NewPCG(5, 6))
	rand32 := func(n int) ([]float32, []float64) {
		x32, x64 := make([]float32, n), make([]float64, n)
		for i := range x32 {
			x32[i] = float32(rng.NormFloat64())
			x64[i] = float64(x32[i])
		}
		return x32, x64
	}
	for _, sz := range [][3]int{{3, 4, 5}, {40, 33, 29}, {130, 70, 257}, {1000, 10, 128}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
				ar, ac := m, k
				if tA == blas.Trans {
					ar, ac = k, m
				}
				br, bc := k, n
				if tB == blas.Trans {
					br, bc = n, k
				}
				lda, ldb, ldc := ac+3, bc+1, n+2
				a32, a64 := rand32(lda * ar)
				b32, b64 := rand32(ldb * br)
				c32, c64 := rand32(ldc * m)
				g.Dgemm(tA, tB, m, n, k, 0.75, a64, lda, b64, ldb, -0.25, c64, ldc)
				ob.Sgemm(tA, tB, m, n, k, 0.75, a32, lda, b32, ldb, -0.25, c32, ldc)
				var num, den float64
				for i := range c64 {
					d := float64(c32[i]) - c64[i]
					num += d * d
					den += c64[i] * c64[i]
				}
				if r := math.Sqrt(num / den); !(r <= 1e-6) {
					t.Fatalf("Sgemm %v %v %v: relative error %.3g against float64", sz, tA, tB, r)
				}
			}
		}
	}
}
