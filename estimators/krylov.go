package estimators

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

// ErrNonFinite reports an operator that returned NaN or ±Inf.
var ErrNonFinite = errors.New("estimators: operator returned a non-finite value")

// ErrNotConverged reports that an estimator hit its HVP budget before its
// tolerance. The accompanying result is still valid: its certificates
// (residuals, standard errors) say how far it got.
var ErrNotConverged = errors.New("estimators: HVP budget exhausted before convergence")

// breakRel is the size, relative to the operator norm estimate, below which a
// new Krylov direction counts as zero (the subspace is invariant). What is
// dropped is at most this large, far below any useful residual tolerance.
const breakRel = 1e-12

func vec(x []float64) blas64.Vector { return blas64.Vector{N: len(x), Inc: 1, Data: x} }

// blockKS is a symmetric block Krylov–Schur iteration: block Lanczos with
// full reorthogonalisation and thick restarts. Rows of v are basis vectors.
// With m basis vectors and the next block Q = rows m..m+qb of v it keeps
//
//	H v_i = Σ_{j<m} g[j,i] v_j + Σ_{l<qb} s[l,i] q_l,   i < m,
//
// so the residual of a Ritz pair (θ, V y) is Q·(S y) and its norm ‖S y‖
// costs nothing. A block of size b resolves eigenvalue multiplicities up to b.
type blockKS struct {
	op       hvp.Operator
	n        int
	b        int
	maxBasis int

	v       []float64 // (maxBasis+b)×n
	m, qb   int
	g       []float64 // maxBasis×maxBasis, leading m×m block used
	s       []float64 // b×maxBasis
	w       []float64 // b×n
	coef    []float64 // maxBasis+b
	scratch []float64 // maxBasis+b
	blk     []float64 // b×b
	tmp     []float64 // restart chunk buffer

	rng      *rand.Rand
	hvps     int
	restarts int
	normEst  float64

	eig   mat.EigenSym
	theta []float64 // Ritz values, ascending
	y     *mat.Dense
	sy    []float64
}

func newBlockKS(op hvp.Operator, b, maxBasis int, rng *rand.Rand) *blockKS {
	n := op.Dim()
	return &blockKS{
		op: op, n: n, b: b, maxBasis: maxBasis,
		v:       make([]float64, (maxBasis+b)*n),
		g:       make([]float64, maxBasis*maxBasis),
		s:       make([]float64, b*maxBasis),
		w:       make([]float64, b*n),
		coef:    make([]float64, maxBasis+b),
		scratch: make([]float64, maxBasis+b),
		blk:     make([]float64, b*b),
		rng:     rng,
		y:       &mat.Dense{},
		sy:      make([]float64, b),
	}
}

func (k *blockKS) row(i int) []float64 { return k.v[i*k.n : (i+1)*k.n] }

// orth makes x orthogonal to rows [0,r) of v by classical Gram–Schmidt, two
// passes and more while a pass removes most of what is left (DGKS). The
// projection coefficients are added to coef when it is not nil. It returns
// the final norm of x.
func (k *blockKS) orth(x []float64, r int, coef []float64) float64 {
	nrm := floats.Norm(x, 2)
	if r == 0 {
		return nrm
	}
	basis := blas64.General{Rows: r, Cols: k.n, Stride: k.n, Data: k.v[:r*k.n]}
	c := k.scratch[:r]
	for pass := 0; pass < 5; pass++ {
		blas64.Gemv(blas.NoTrans, 1, basis, vec(x), 0, vec(c))
		blas64.Gemv(blas.Trans, -1, basis, vec(c), 1, vec(x))
		if coef != nil {
			floats.Add(coef[:r], c)
		}
		prev := nrm
		nrm = floats.Norm(x, 2)
		if pass >= 1 && nrm > prev/math.Sqrt2 {
			break
		}
	}
	return nrm
}

// randomFill puts a random unit vector orthogonal to rows [0,r) into x. It
// returns false when no such vector exists (r = n, numerically).
func (k *blockKS) randomFill(x []float64, r int) bool {
	for try := 0; try < 3; try++ {
		gaussian(x, k.rng)
		n0 := floats.Norm(x, 2)
		nrm := k.orth(x, r, nil)
		if nrm > 1e-8*n0 {
			floats.Scale(1/nrm, x)
			return true
		}
	}
	clear(x)
	return false
}

// start orthonormalises the start block, given as up to b rows, into the
// first block Q; missing or dependent directions are filled at random.
func (k *blockKS) start(block [][]float64) {
	k.m = 0
	k.qb = min(k.b, k.n)
	for l := 0; l < k.qb; l++ {
		x := k.row(l)
		ok := false
		if l < len(block) {
			copy(x, block[l])
			n0 := floats.Norm(x, 2)
			if nrm := k.orth(x, l, nil); n0 > 0 && nrm > 1e-10*n0 {
				floats.Scale(1/nrm, x)
				ok = true
			}
		}
		if !ok && !k.randomFill(x, l) {
			k.qb = l
			return
		}
	}
}

// expand applies H to the current block Q, appends it to the basis and
// computes the next block (b HVPs).
func (k *blockKS) expand(ctx context.Context) error {
	n, m0, qb := k.n, k.m, k.qb
	ld := k.maxBasis
	for l := 0; l < qb; l++ {
		wl := k.w[l*n : (l+1)*n]
		if err := hvp.ApplyContext(ctx, k.op, wl, k.row(m0+l)); err != nil {
			return fmt.Errorf("estimators: Hessian-vector product: %w", err)
		}
		k.hvps++
		nrm := floats.Norm(wl, 2)
		if math.IsNaN(nrm) || math.IsInf(nrm, 0) {
			return ErrNonFinite
		}
		k.normEst = math.Max(k.normEst, nrm)
	}
	m1 := m0 + qb
	// The coupling to the old basis is known from the Krylov relation.
	for l := 0; l < qb; l++ {
		for i := 0; i < m0; i++ {
			k.g[i*ld+m0+l] = k.s[l*ld+i]
			k.g[(m0+l)*ld+i] = k.s[l*ld+i]
		}
	}
	// Full reorthogonalisation; the new diagonal block is QᵀHQ.
	for l := 0; l < qb; l++ {
		wl := k.w[l*n : (l+1)*n]
		coef := k.coef[:m1]
		clear(coef)
		k.orth(wl, m1, coef)
		for a := 0; a < qb; a++ {
			k.blk[a*qb+l] = coef[m0+a]
		}
	}
	for a := 0; a < qb; a++ {
		for c := 0; c < qb; c++ {
			k.g[(m0+a)*ld+m0+c] = (k.blk[a*qb+c] + k.blk[c*qb+a]) / 2
		}
	}
	k.m = m1
	// QR of the residual block gives the next block and the new coupling.
	// A direction that vanishes (invariant subspace, rank-deficient H) is
	// dropped; the block is refilled with random directions coupled to
	// nothing, so the iteration keeps exploring with full block size.
	clear(k.s)
	limit := k.n - m1
	tol := breakRel * k.normEst
	cnt := 0
	for l := 0; l < qb; l++ {
		x := k.row(m1 + cnt)
		copy(x, k.w[l*n:(l+1)*n])
		coef := k.coef[:m1+cnt]
		clear(coef)
		nrm := k.orth(x, m1+cnt, coef)
		for a := 0; a < cnt; a++ {
			k.s[a*ld+m0+l] = coef[m1+a]
		}
		if nrm > tol && nrm > 0 && cnt < limit {
			floats.Scale(1/nrm, x)
			k.s[cnt*ld+m0+l] = nrm
			cnt++
		}
	}
	for cnt < min(k.b, limit) && k.randomFill(k.row(m1+cnt), m1+cnt) {
		cnt++
	}
	k.qb = cnt
	return nil
}

// ritz computes the Ritz values (ascending) and vectors of the projection.
func (k *blockKS) ritz() error {
	m, ld := k.m, k.maxBasis
	a := mat.NewSymDense(m, nil)
	for i := 0; i < m; i++ {
		for j := i; j < m; j++ {
			a.SetSym(i, j, k.g[i*ld+j])
		}
	}
	if !k.eig.Factorize(a, true) {
		return errors.New("estimators: eigendecomposition of the projected matrix failed")
	}
	if cap(k.theta) < m {
		k.theta = make([]float64, m)
	}
	k.theta = k.eig.Values(k.theta[:m])
	k.y.Reset()
	k.eig.VectorsTo(k.y)
	for _, t := range k.theta {
		k.normEst = math.Max(k.normEst, math.Abs(t))
	}
	return nil
}

// residual returns ‖S y_j‖, the residual norm of Ritz pair j.
func (k *blockKS) residual(j int) float64 {
	ld := k.maxBasis
	var ss float64
	for l := 0; l < k.qb; l++ {
		var t float64
		for i := 0; i < k.m; i++ {
			t += k.s[l*ld+i] * k.y.At(i, j)
		}
		ss += t * t
	}
	return math.Sqrt(ss)
}

// restart keeps the Ritz vectors with the given indices (thick restart).
func (k *blockKS) restart(keep []int) {
	n, m, p, ld := k.n, k.m, len(keep), k.maxBasis
	yp := make([]float64, m*p)
	for i := 0; i < m; i++ {
		for j, c := range keep {
			yp[i*p+j] = k.y.At(i, c)
		}
	}
	ypm := blas64.General{Rows: m, Cols: p, Stride: p, Data: yp}
	const chunk = 1024
	if len(k.tmp) < p*chunk {
		k.tmp = make([]float64, p*chunk)
	}
	for c0 := 0; c0 < n; c0 += chunk {
		c1 := min(n, c0+chunk)
		wd := c1 - c0
		src := blas64.General{Rows: m, Cols: wd, Stride: n, Data: k.v[c0 : (m-1)*n+c1]}
		dst := blas64.General{Rows: p, Cols: wd, Stride: wd, Data: k.tmp[:p*wd]}
		blas64.Gemm(blas.Trans, blas.NoTrans, 1, ypm, src, 0, dst)
		for i := 0; i < p; i++ {
			copy(k.v[i*n+c0:i*n+c1], k.tmp[i*wd:(i+1)*wd])
		}
	}
	copy(k.v[p*n:(p+k.qb)*n], k.v[m*n:(m+k.qb)*n])
	clear(k.g)
	for j, c := range keep {
		k.g[j*ld+j] = k.theta[c]
	}
	ns := make([]float64, k.qb*p)
	for l := 0; l < k.qb; l++ {
		for j, c := range keep {
			var t float64
			for i := 0; i < m; i++ {
				t += k.s[l*ld+i] * k.y.At(i, c)
			}
			ns[l*p+j] = t
		}
	}
	clear(k.s)
	for l := 0; l < k.qb; l++ {
		copy(k.s[l*ld:l*ld+p], ns[l*p:(l+1)*p])
	}
	k.m = p
	k.restarts++
}

// ritzVector writes V·y_j into dst.
func (k *blockKS) ritzVector(dst []float64, j int) {
	m := k.m
	yj := make([]float64, m)
	for i := range yj {
		yj[i] = k.y.At(i, j)
	}
	basis := blas64.General{Rows: m, Cols: k.n, Stride: k.n, Data: k.v[:m*k.n]}
	blas64.Gemv(blas.Trans, 1, basis, vec(yj), 0, vec(dst))
}

// product returns H·x for the Ritz vector x = V·y_j (normalised), using
// the Krylov relation H V y = V G y + Q S y = θ x + Q (S y).
func (k *blockKS) product(x []float64, j int) []float64 {
	out := make([]float64, k.n)
	floats.AddScaled(out, k.theta[j], x)
	ld := k.maxBasis
	for l := 0; l < k.qb; l++ {
		var t float64
		for i := 0; i < k.m; i++ {
			t += k.s[l*ld+i] * k.y.At(i, j)
		}
		floats.AddScaled(out, t, k.row(k.m+l))
	}
	return out
}
