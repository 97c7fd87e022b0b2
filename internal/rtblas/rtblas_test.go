package rtblas

import (
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// openBLAS loads OpenBLAS or skips the test when it is not installed (CI
// installs it; HESSMON_BLAS=openblas makes a missing library a failure).
func openBLAS(t testing.TB) *Implementation {
	t.Helper()
	var reasons []string
	for _, name := range openBLASSonames() {
		impl, info, err := Load(name, true)
		if err == nil {
			t.Logf("loaded %s", info)
			return impl
		}
		reasons = append(reasons, err.Error())
	}
	if os.Getenv(EnvVar) == "openblas" {
		t.Fatalf("%s=openblas but OpenBLAS does not load: %s", EnvVar, strings.Join(reasons, "; "))
	}
	t.Skipf("OpenBLAS not installed: %s", strings.Join(reasons, "; "))
	return nil
}

func randv(rng *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	return x
}

func close(t *testing.T, what string, got, want []float64) {
	t.Helper()
	var num, den float64
	for i := range want {
		num += (got[i] - want[i]) * (got[i] - want[i])
		den += want[i] * want[i]
	}
	if r := math.Sqrt(num / math.Max(den, 1e-300)); !(r <= 1e-13) {
		t.Fatalf("%s: relative error %.3g against gonum", what, r)
	}
}

// TestAgainstGonum checks every forwarded routine against gonum's own on
// shapes above and below the forwarding thresholds, both transposes, and
// strided operands.
func TestAgainstGonum(t *testing.T) {
	ob := openBLAS(t)
	var g gonum.Implementation
	rng := rand.New(rand.NewPCG(3, 4))
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
				a, b := randv(rng, lda*ar), randv(rng, ldb*br)
				c := randv(rng, ldc*m)
				want := append([]float64(nil), c...)
				g.Dgemm(tA, tB, m, n, k, 0.7, a, lda, b, ldb, -0.3, want, ldc)
				ob.Dgemm(tA, tB, m, n, k, 0.7, a, lda, b, ldb, -0.3, c, ldc)
				close(t, "Dgemm", c, want)
			}
			ldA := k + 2
			a := randv(rng, ldA*m)
			lx, ly := k, m
			if tA == blas.Trans {
				lx, ly = m, k
			}
			x, y := randv(rng, 2*lx), randv(rng, 3*ly)
			want := append([]float64(nil), y...)
			g.Dgemv(tA, m, k, 1.5, a, ldA, x, 2, 0.25, want, 3)
			ob.Dgemv(tA, m, k, 1.5, a, ldA, x, 2, 0.25, y, 3)
			close(t, "Dgemv", y, want)
		}
		lda := n + 1
		a, x, y := randv(rng, lda*m), randv(rng, m), randv(rng, 2*n)
		want := append([]float64(nil), a...)
		g.Dger(m, n, -0.5, x, 1, y, 2, want, lda)
		ob.Dger(m, n, -0.5, x, 1, y, 2, a, lda)
		close(t, "Dger", a, want)
		for _, ul := range []blas.Uplo{blas.Upper, blas.Lower} {
			s, x, y := randv(rng, (m+1)*m), randv(rng, m), randv(rng, m)
			want := append([]float64(nil), y...)
			g.Dsymv(ul, m, 0.9, s, m+1, x, 1, 0.1, want, 1)
			ob.Dsymv(ul, m, 0.9, s, m+1, x, 1, 0.1, y, 1)
			close(t, "Dsymv", y, want)
		}
	}
	for _, n := range []int{7, 5000, 118282} {
		x, y := randv(rng, 2*n), randv(rng, n)
		if got, want := ob.Ddot(n, x, 2, y, 1), g.Ddot(n, x, 2, y, 1); math.Abs(got-want) > 1e-12*math.Sqrt(float64(n)) {
			t.Fatalf("Ddot n=%d: %v, gonum %v", n, got, want)
		}
		if got, want := ob.Dnrm2(n, x, 1), g.Dnrm2(n, x, 1); math.Abs(got-want) > 1e-13*want {
			t.Fatalf("Dnrm2 n=%d: %v, gonum %v", n, got, want)
		}
		want := append([]float64(nil), y...)
		g.Daxpy(n, 0.3, x, 2, want, 1)
		ob.Daxpy(n, 0.3, x, 2, y, 1)
		close(t, "Daxpy", y, want)
		g.Dscal(n, -1.7, want, 1)
		ob.Dscal(n, -1.7, y, 1)
		close(t, "Dscal", y, want)
	}
}

// TestBadArgumentsPanicLikeGonum: invalid sizes never reach the library
// (which would read out of bounds); gonum's checks panic instead.
func TestBadArgumentsPanicLikeGonum(t *testing.T) {
	ob := openBLAS(t)
	defer func() {
		if recover() == nil {
			t.Fatal("short C did not panic")
		}
	}()
	a, b := make([]float64, 64*64), make([]float64, 64*64)
	ob.Dgemm(blas.NoTrans, blas.NoTrans, 64, 64, 64, 1, a, 64, b, 64, 0, make([]float64, 10), 64)
}

// TestAllocations: a forwarded call allocates at most purego.SyscallN's
// variadic argument slice (it is go:uintptrescapes, so the slice escapes);
// the scalars come from a pool.
func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	ob := openBLAS(t)
	a, b, c := make([]float64, 128*128), make([]float64, 128*128), make([]float64, 128*128)
	x := make([]float64, 1<<14)
	if n := testing.AllocsPerRun(20, func() {
		ob.Dgemm(blas.NoTrans, blas.Trans, 128, 128, 128, 1, a, 128, b, 128, 0, c, 128)
		ob.Dgemv(blas.NoTrans, 128, 128, 1, a, 128, b, 1, 0, c, 1)
		ob.Daxpy(len(x), 2, x, 1, x, 1)
	}); n > 3 {
		t.Errorf("Dgemm+Dgemv+Daxpy allocate %v times, want at most one each", n)
	}
	if n := testing.AllocsPerRun(20, func() { ob.Ddot(len(x), x, 1, x, 1) }); n > 2 {
		t.Errorf("Ddot allocates %v times per call, want at most 2 (purego.RegisterFunc's reflection)", n)
	}
}

// TestChooseFallsBack: requests that cannot be met leave gonum installed
// and say why; none of them crash.
func TestChooseFallsBack(t *testing.T) {
	for _, req := range []string{"gonum", "nonsense", "/nonexistent/libblas.so", "libc.so.6"} {
		info, broken := choose(req, "auto")
		if want := req == "libc.so.6"; broken != want {
			t.Errorf("%q: broken=%v, want %v (a library that exists but lacks BLAS is worth a warning)", req, broken, want)
		}
		if info.Name != "gonum" || info.Loaded() {
			t.Errorf("%q: chose %v, want gonum", req, info)
		}
		if req != "gonum" && info.Fallback == "" {
			t.Errorf("%q: no reason given for the fallback", req)
		}
		t.Logf("%q → %v", req, info)
	}
}
