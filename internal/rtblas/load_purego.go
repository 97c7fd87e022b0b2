//go:build (linux || freebsd) && (amd64 || arm64)

package rtblas

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Implementation forwards the BLAS routines on hessmon's hot paths to a
// library loaded at run time and inherits every other routine (and small
// problems, where a foreign call costs more than it saves) from gonum.
//
// Calls pass Fortran-style pointer arguments through purego.SyscallN; the
// scalars live in a pooled heap block, so a call allocates only SyscallN's
// variadic slice (about 130 bytes, ~50 ns: nothing next to a GEMM).
type Implementation struct {
	gonum.Implementation
	l *library
	// Sizes below which a routine stays in gonum: a purego call costs a
	// few hundred nanoseconds, and OpenBLAS's threads only pay off on
	// large operands.
	minGemm, minLevel2, minLevel1 int
	threads                       int // the library's own threads (OpenBLAS), 0 if unknown
}

// Threads is the number of threads the library runs one call on; the
// trainer splits large products over goroutines when it is 1.
func (impl *Implementation) Threads() int { return impl.threads }

// ForwardAll returns a copy that sends every call to the library whatever
// its size, so tests can run small problems through it.
func (impl *Implementation) ForwardAll() *Implementation {
	c := *impl
	c.minGemm, c.minLevel2, c.minLevel1 = 0, 0, 0
	return &c
}

type library struct {
	dgemm, dgemv, dger, dsymv, daxpy, dscal uintptr
	sgemm                                   uintptr // 0 when the library has no single precision
	ddot                                    func(n *int32, x *float64, incx *int32, y *float64, incy *int32) float64
	dnrm2                                   func(n *int32, x *float64, incx *int32) float64
	args                                    sync.Pool // *callArgs
}

// callArgs holds the by-reference scalars of one Fortran BLAS call.
type callArgs struct {
	m, n, k, lda, ldb, ldc, incx, incy int32
	alpha, beta                        float64
	alpha32, beta32                    float32
	ta, tb                             byte
}

func (l *library) get() *callArgs { return l.args.Get().(*callArgs) }

// Load opens a shared library with the Fortran BLAS symbols and returns an
// implementation that forwards to it. With requireOpenBLAS, a library that
// is not OpenBLAS (Debian's libblas.so.3 may be the slow reference BLAS) is
// refused. Load does not call blas64.Use.
func Load(name string, requireOpenBLAS bool) (*Implementation, Info, error) {
	h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		if strings.Contains(err.Error(), "No such file") {
			return nil, Info{}, fmt.Errorf("loading %s: %w: %w", name, ErrNotInstalled, err)
		}
		return nil, Info{}, fmt.Errorf("loading %s: %w", name, err)
	}
	sym := func(s string) uintptr {
		p, err := purego.Dlsym(h, s)
		if err != nil {
			return 0
		}
		return p
	}
	l := &library{
		dgemm: sym("dgemm_"), dgemv: sym("dgemv_"), dger: sym("dger_"), dsymv: sym("dsymv_"),
		daxpy: sym("daxpy_"), dscal: sym("dscal_"), sgemm: sym("sgemm_"),
	}
	l.args.New = func() any { return new(callArgs) }
	ddot, dnrm2 := sym("ddot_"), sym("dnrm2_")
	var missing []string
	for s, p := range map[string]uintptr{"dgemm_": l.dgemm, "dgemv_": l.dgemv, "dger_": l.dger, "dsymv_": l.dsymv,
		"daxpy_": l.daxpy, "dscal_": l.dscal, "ddot_": ddot, "dnrm2_": dnrm2} {
		if p == 0 {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		purego.Dlclose(h)
		return nil, Info{}, fmt.Errorf("%s has no Fortran BLAS symbols %s", name, strings.Join(missing, ", "))
	}
	info := Info{Name: "blas", File: mappedFile(l.dgemm, name)}
	if cfg := sym("openblas_get_config"); cfg != 0 {
		var getConfig func() string
		purego.RegisterFunc(&getConfig, cfg)
		info.Name, info.Config = "openblas", getConfig()
		if set, get := sym("openblas_set_num_threads"), sym("openblas_get_num_threads"); set != 0 && get != 0 {
			if n, ok := threadRequest(); ok {
				purego.SyscallN(set, uintptr(n))
			}
			r, _, _ := purego.SyscallN(get)
			info.Threads = int(int32(r))
		}
	} else if requireOpenBLAS {
		purego.Dlclose(h)
		return nil, Info{}, fmt.Errorf("%s (%s) is not OpenBLAS (no openblas_get_config): %w; the reference BLAS is slower than gonum", name, info.File, ErrNotInstalled)
	}
	purego.RegisterFunc(&l.ddot, ddot)
	purego.RegisterFunc(&l.dnrm2, dnrm2)
	return &Implementation{l: l, minGemm: 1 << 15, minLevel2: 1 << 14, minLevel1: 1 << 12, threads: info.Threads}, info, nil
}

// threadRequest returns the OpenBLAS thread count hessmon asks for:
// HESSMON_BLAS_THREADS if set, else nothing when the user set OpenBLAS's
// own variables, else 1. One thread per call lets Go's scheduler share the
// cores: the trainer splits large products over goroutines, which block
// instead of spinning, so a training loop and an asynchronous probe (or
// other processes) do not fight OpenBLAS's busy-waiting workers.
func threadRequest() (int, bool) {
	if s := os.Getenv(EnvVar + "_THREADS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n, true
		}
	}
	for _, v := range []string{"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"} {
		if os.Getenv(v) != "" {
			return 0, false
		}
	}
	return 1, true
}

// mappedFile finds the file that holds address p in /proc/self/maps, so the
// log can say which library a soname resolved to.
func mappedFile(p uintptr, fallback string) string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return fallback
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		a, err1 := strconv.ParseUint(lo, 16, 64)
		b, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 == nil && err2 == nil && uint64(p) >= a && uint64(p) < b {
			return fields[5]
		}
	}
	return fallback
}

func fits(xs ...int) bool {
	for _, x := range xs {
		if x < 0 || x > math.MaxInt32 {
			return false
		}
	}
	return true
}

func trans(t blas.Transpose) (byte, bool) {
	switch t {
	case blas.NoTrans:
		return 'N', true
	case blas.Trans, blas.ConjTrans:
		return 'T', true
	}
	return 0, false
}

// need reports whether a vector of n elements with increment inc fits in
// a slice of length l.
func need(l, n, inc int) bool { return n == 0 || l >= 1+(n-1)*inc }

// gemmArgs returns the library's transpose characters for a row-major
// product of m×n = op(A)·op(B) with inner size k, and whether the library
// may take it: known transposes, 32-bit sizes, and strides and slice
// lengths that hold the matrices (else gonum's checks and panics apply).
func gemmArgs(tA, tB blas.Transpose, m, n, k, lda, ldb, ldc, la, lb, lc int) (ta, tb byte, ok bool) {
	ta, okA := trans(tA)
	tb, okB := trans(tB)
	ar, ac := m, k
	if ta == 'T' {
		ar, ac = k, m
	}
	br, bc := k, n
	if tb == 'T' {
		br, bc = n, k
	}
	ok = okA && okB && fits(m, n, k, lda, ldb, ldc) &&
		lda >= max(1, ac) && ldb >= max(1, bc) && ldc >= max(1, n) &&
		la >= lda*(ar-1)+ac && lb >= ldb*(br-1)+bc && lc >= ldc*(m-1)+n
	return ta, tb, ok
}

// Dgemm computes C = alpha·op(A)·op(B) + beta·C for row-major matrices. The
// row-major product is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so the library
// is called with A and B swapped.
func (impl *Implementation) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	ta, tb, ok := gemmArgs(tA, tB, m, n, k, lda, ldb, ldc, len(a), len(b), len(c))
	if !ok || m*n*k < impl.minGemm || alpha == 0 {
		impl.Implementation.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	l := impl.l
	p := l.get()
	p.m, p.n, p.k, p.lda, p.ldb, p.ldc = int32(m), int32(n), int32(k), int32(lda), int32(ldb), int32(ldc)
	p.alpha, p.beta, p.ta, p.tb = alpha, beta, ta, tb
	purego.SyscallN(l.dgemm,
		uintptr(unsafe.Pointer(&p.tb)), uintptr(unsafe.Pointer(&p.ta)),
		uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.m)), uintptr(unsafe.Pointer(&p.k)),
		uintptr(unsafe.Pointer(&p.alpha)),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&p.ldb)),
		uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&p.lda)),
		uintptr(unsafe.Pointer(&p.beta)),
		uintptr(unsafe.Pointer(&c[0])), uintptr(unsafe.Pointer(&p.ldc)),
		1, 1) // hidden lengths of the two CHARACTER arguments
	l.args.Put(p)
}

// Sgemm is Dgemm in single precision, for float32 HVPs. A library without
// sgemm_ (none that hessmon loads) leaves it to gonum.
func (impl *Implementation) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb, ok := gemmArgs(tA, tB, m, n, k, lda, ldb, ldc, len(a), len(b), len(c))
	if impl.l.sgemm == 0 || !ok || m*n*k < impl.minGemm || alpha == 0 {
		impl.Implementation.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	l := impl.l
	p := l.get()
	p.m, p.n, p.k, p.lda, p.ldb, p.ldc = int32(m), int32(n), int32(k), int32(lda), int32(ldb), int32(ldc)
	p.alpha32, p.beta32, p.ta, p.tb = alpha, beta, ta, tb
	purego.SyscallN(l.sgemm,
		uintptr(unsafe.Pointer(&p.tb)), uintptr(unsafe.Pointer(&p.ta)),
		uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.m)), uintptr(unsafe.Pointer(&p.k)),
		uintptr(unsafe.Pointer(&p.alpha32)),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&p.ldb)),
		uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&p.lda)),
		uintptr(unsafe.Pointer(&p.beta32)),
		uintptr(unsafe.Pointer(&c[0])), uintptr(unsafe.Pointer(&p.ldc)),
		1, 1)
	l.args.Put(p)
}

// Dgemv computes y = alpha·op(A)·x + beta·y for a row-major A, which the
// library sees as the column-major Aᵀ.
func (impl *Implementation) Dgemv(tA blas.Transpose, m, n int, alpha float64, a []float64, lda int, x []float64, incX int, beta float64, y []float64, incY int) {
	t, ok := trans(tA)
	lx, ly := n, m
	if t == 'T' {
		lx, ly = m, n
	}
	if !ok || m*n < impl.minLevel2 || alpha == 0 || incX <= 0 || incY <= 0 || !fits(m, n, lda, incX, incY) ||
		lda < max(1, n) || len(a) < lda*(m-1)+n || !need(len(x), lx, incX) || !need(len(y), ly, incY) {
		impl.Implementation.Dgemv(tA, m, n, alpha, a, lda, x, incX, beta, y, incY)
		return
	}
	ft := byte('T')
	if t == 'T' {
		ft = 'N'
	}
	l := impl.l
	p := l.get()
	p.m, p.n, p.lda, p.incx, p.incy, p.alpha, p.beta, p.ta = int32(n), int32(m), int32(lda), int32(incX), int32(incY), alpha, beta, ft
	purego.SyscallN(l.dgemv,
		uintptr(unsafe.Pointer(&p.ta)), uintptr(unsafe.Pointer(&p.m)), uintptr(unsafe.Pointer(&p.n)),
		uintptr(unsafe.Pointer(&p.alpha)), uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&p.lda)),
		uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&p.incx)),
		uintptr(unsafe.Pointer(&p.beta)), uintptr(unsafe.Pointer(&y[0])), uintptr(unsafe.Pointer(&p.incy)),
		1)
	l.args.Put(p)
}

// Dger computes A += alpha·x·yᵀ for a row-major A (column-major Aᵀ += alpha·y·xᵀ).
func (impl *Implementation) Dger(m, n int, alpha float64, x []float64, incX int, y []float64, incY int, a []float64, lda int) {
	if m*n < impl.minLevel2 || alpha == 0 || incX <= 0 || incY <= 0 || !fits(m, n, lda, incX, incY) ||
		lda < max(1, n) || len(a) < lda*(m-1)+n || !need(len(x), m, incX) || !need(len(y), n, incY) {
		impl.Implementation.Dger(m, n, alpha, x, incX, y, incY, a, lda)
		return
	}
	l := impl.l
	p := l.get()
	p.m, p.n, p.lda, p.incx, p.incy, p.alpha = int32(n), int32(m), int32(lda), int32(incX), int32(incY), alpha
	purego.SyscallN(l.dger,
		uintptr(unsafe.Pointer(&p.m)), uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.alpha)),
		uintptr(unsafe.Pointer(&y[0])), uintptr(unsafe.Pointer(&p.incy)),
		uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&p.incx)),
		uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&p.lda)))
	l.args.Put(p)
}

// Dsymv computes y = alpha·A·x + beta·y for a symmetric row-major A; the
// upper triangle of a row-major matrix is the lower one of its column-major view.
func (impl *Implementation) Dsymv(ul blas.Uplo, n int, alpha float64, a []float64, lda int, x []float64, incX int, beta float64, y []float64, incY int) {
	var fu byte
	switch ul {
	case blas.Upper:
		fu = 'L'
	case blas.Lower:
		fu = 'U'
	}
	if fu == 0 || n*n < impl.minLevel2 || alpha == 0 || incX <= 0 || incY <= 0 || !fits(n, lda, incX, incY) ||
		lda < max(1, n) || len(a) < lda*(n-1)+n || !need(len(x), n, incX) || !need(len(y), n, incY) {
		impl.Implementation.Dsymv(ul, n, alpha, a, lda, x, incX, beta, y, incY)
		return
	}
	l := impl.l
	p := l.get()
	p.n, p.lda, p.incx, p.incy, p.alpha, p.beta, p.ta = int32(n), int32(lda), int32(incX), int32(incY), alpha, beta, fu
	purego.SyscallN(l.dsymv,
		uintptr(unsafe.Pointer(&p.ta)), uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.alpha)),
		uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&p.lda)),
		uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&p.incx)),
		uintptr(unsafe.Pointer(&p.beta)), uintptr(unsafe.Pointer(&y[0])), uintptr(unsafe.Pointer(&p.incy)),
		1)
	l.args.Put(p)
}

// Daxpy computes y += alpha·x.
func (impl *Implementation) Daxpy(n int, alpha float64, x []float64, incX int, y []float64, incY int) {
	if n < impl.minLevel1 || alpha == 0 || incX <= 0 || incY <= 0 || !fits(n, incX, incY) || !need(len(x), n, incX) || !need(len(y), n, incY) {
		impl.Implementation.Daxpy(n, alpha, x, incX, y, incY)
		return
	}
	l := impl.l
	p := l.get()
	p.n, p.incx, p.incy, p.alpha = int32(n), int32(incX), int32(incY), alpha
	purego.SyscallN(l.daxpy,
		uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.alpha)),
		uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&p.incx)),
		uintptr(unsafe.Pointer(&y[0])), uintptr(unsafe.Pointer(&p.incy)))
	l.args.Put(p)
}

// Dscal computes x *= alpha.
func (impl *Implementation) Dscal(n int, alpha float64, x []float64, incX int) {
	if n < impl.minLevel1 || incX <= 0 || !fits(n, incX) || !need(len(x), n, incX) {
		impl.Implementation.Dscal(n, alpha, x, incX)
		return
	}
	l := impl.l
	p := l.get()
	p.n, p.incx, p.alpha = int32(n), int32(incX), alpha
	purego.SyscallN(l.dscal,
		uintptr(unsafe.Pointer(&p.n)), uintptr(unsafe.Pointer(&p.alpha)),
		uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&p.incx)))
	l.args.Put(p)
}

// Ddot returns xᵀy.
func (impl *Implementation) Ddot(n int, x []float64, incX int, y []float64, incY int) float64 {
	if n < impl.minLevel1 || incX <= 0 || incY <= 0 || !fits(n, incX, incY) || !need(len(x), n, incX) || !need(len(y), n, incY) {
		return impl.Implementation.Ddot(n, x, incX, y, incY)
	}
	l := impl.l
	p := l.get()
	p.n, p.incx, p.incy = int32(n), int32(incX), int32(incY)
	r := l.ddot(&p.n, &x[0], &p.incx, &y[0], &p.incy)
	l.args.Put(p)
	return r
}

// Dnrm2 returns the Euclidean norm of x.
func (impl *Implementation) Dnrm2(n int, x []float64, incX int) float64 {
	if n < impl.minLevel1 || incX <= 0 || !fits(n, incX) || !need(len(x), n, incX) {
		return impl.Implementation.Dnrm2(n, x, incX)
	}
	l := impl.l
	p := l.get()
	p.n, p.incx = int32(n), int32(incX)
	r := l.dnrm2(&p.n, &x[0], &p.incx)
	l.args.Put(p)
	return r
}
