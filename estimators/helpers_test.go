package estimators

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

// testMatrix is a dense symmetric matrix with a known spectrum.
type testMatrix struct {
	op     *hvp.Dense
	sym    *mat.SymDense
	lambda []float64  // eigenvalues as built
	q      *mat.Dense // eigenvectors in columns
}

// randomOrthogonal returns an n×n Haar-ish orthogonal matrix (QR of a
// Gaussian matrix).
func randomOrthogonal(n int, rng *rand.Rand) *mat.Dense {
	a := mat.NewDense(n, n, nil)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			a.Set(i, j, rng.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(a)
	q := mat.NewDense(n, n, nil)
	qr.QTo(q)
	return q
}

// newTestMatrix builds Q·diag(lambda)·Qᵀ with a random orthogonal Q.
func newTestMatrix(lambda []float64, seed uint64) *testMatrix {
	n := len(lambda)
	rng := rand.New(rand.NewPCG(seed, 99))
	q := randomOrthogonal(n, rng)
	var ql mat.Dense
	ql.Apply(func(i, j int, v float64) float64 { return v * lambda[j] }, q)
	var a mat.Dense
	a.Mul(&ql, q.T())
	s := mat.NewSymDense(n, nil)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			s.SetSym(i, j, (a.At(i, j)+a.At(j, i))/2)
		}
	}
	return &testMatrix{op: hvp.NewDense(s), sym: s, lambda: slices.Clone(lambda), q: q}
}

// perturbed returns A + eps·‖A‖₂·E with E a random symmetric matrix of unit
// spectral norm (approximately), and its exact spectrum.
func (t *testMatrix) perturbed(eps float64, seed uint64) (*hvp.Dense, []float64) {
	n := t.sym.SymmetricDim()
	rng := rand.New(rand.NewPCG(seed, 7))
	norm := 0.0
	for _, l := range t.lambda {
		norm = math.Max(norm, math.Abs(l))
	}
	scale := eps * norm / (2 * math.Sqrt(float64(n)))
	s := mat.NewSymDense(n, nil)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			s.SetSym(i, j, t.sym.At(i, j)+scale*rng.NormFloat64())
		}
	}
	return hvp.NewDense(s), denseEigenvalues(s)
}

// denseEigenvalues returns the exact eigenvalues in ascending order.
func denseEigenvalues(s mat.Symmetric) []float64 {
	var e mat.EigenSym
	if !e.Factorize(s, false) {
		panic("eigen failed")
	}
	return e.Values(nil)
}

// wantedTruth returns the k wanted exact eigenvalues in the result order.
func wantedTruth(lambda []float64, order Order, k int) []float64 {
	v := slices.Clone(lambda)
	slices.Sort(v)
	return pick(v, order, k)
}

func pick(asc []float64, order Order, k int) []float64 {
	idx := keepSet(asc, order, k)
	out := make([]float64, len(idx))
	for i, j := range idx {
		out[i] = asc[j]
	}
	return out
}

// linspace returns n points from a to b inclusive.
func linspace(a, b float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		if n == 1 {
			out[i] = a
			continue
		}
		out[i] = a + (b-a)*float64(i)/float64(n-1)
	}
	return out
}

func assertf(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
}

func denseOp(s *mat.SymDense) *hvp.Dense { return hvp.NewDense(s) }

// nil0 is a 0×0 symmetric matrix.
func nil0() *mat.SymDense { return &mat.SymDense{} }
