package hvp_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// denseOf assembles the matrix of op from its products with unit vectors,
// symmetrised.
func denseOf(t *testing.T, op hvp.Operator) *mat.SymDense {
	t.Helper()
	n := op.Dim()
	full := mat.NewDense(n, n, nil)
	e, col := make([]float64, n), make([]float64, n)
	for j := range n {
		e[j] = 1
		if err := op.Apply(col, e); err != nil {
			t.Fatal(err)
		}
		e[j] = 0
		full.SetCol(j, col)
	}
	h := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			h.SetSym(i, j, (full.At(i, j)+full.At(j, i))/2)
		}
	}
	return h
}

// eigs returns the eigenvalues of a symmetric matrix in ascending order.
func eigs(t *testing.T, a mat.Symmetric) []float64 {
	t.Helper()
	var es mat.EigenSym
	if !es.Factorize(a, false) {
		t.Fatal("EigenSym failed")
	}
	return es.Values(nil)
}

// scaled returns D·H·D for D = diag(d) on the dense matrix.
func scaled(h *mat.SymDense, d []float64) *mat.SymDense {
	n := h.SymmetricDim()
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			s.SetSym(i, j, d[i]*h.At(i, j)*d[j])
		}
	}
	return s
}

// topEigen runs TopEigen for λ1 at tolerance 1e-12.
func topEigen(t *testing.T, op hvp.Operator) estimators.EigenResult {
	t.Helper()
	res, _, err := estimators.TopEigen(context.Background(), op, estimators.EigenOptions{K: 1, Tol: 1e-12, MaxHVPs: 5000, Seed: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestPreconditionedMatchesDenseMLP: on a 6-5-3 tanh MLP after ten Adam
// steps, λ1 of the wrapper with Adam's own P equals the largest eigenvalue
// of the dense P^{-1/2}·H·P^{-1/2} to 1e-8 (relative), and differs from the
// raw λ1(H) (else the test could not tell the two apart).
func TestPreconditionedMatchesDenseMLP(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ds := data.Synthetic(40, net.InShape(), 3, 2)
	opt := &trainer.Adam{LR: 0.01}
	if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: opt,
		Data: ds, BatchSize: 0, Steps: 10, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	p := make([]float64, net.Dim())
	if !opt.Preconditioner(p) {
		t.Fatal("Adam has no preconditioner after 10 steps")
	}
	h, err := hessian.NewExact(net, trainer.HeadBatch(ds, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	pre, err := hvp.NewInversePreconditioned(h, p)
	if err != nil {
		t.Fatal(err)
	}
	d := make([]float64, len(p))
	for i, x := range p {
		d[i] = 1 / math.Sqrt(x)
	}
	hd := denseOf(t, h)
	want := eigs(t, scaled(hd, d))
	w := want[len(want)-1]
	got := topEigen(t, pre)
	if rel := math.Abs(got.Values[0]-w) / math.Abs(w); rel > 1e-8 {
		t.Errorf("λ1(D·H·D) = %.15g, dense %.15g: rel error %.2g", got.Values[0], w, rel)
	}
	raw := eigs(t, hd)
	t.Logf("λ1(P⁻¹H) = %.10g (dense %.10g, residual %.1e, %d HVPs); raw λ1(H) = %.6g", got.Values[0], w, got.Residuals[0], got.HVPs, raw[len(raw)-1])
	if r := w / raw[len(raw)-1]; r < 10 {
		t.Errorf("preconditioned and raw λ1 differ by only %.3g×; the test needs them apart", r)
	}
	// The product of the same dense matrix through the two paths agrees.
	pd := denseOf(t, pre)
	if !mat.EqualApprox(pd, scaled(hd, d), 1e-12*mat.Norm(pd, math.Inf(1))) {
		t.Error("wrapper's matrix differs from D·H·D")
	}
}

// TestPreconditionedMatchesDenseRandom: a random symmetric matrix, both SPD
// and indefinite, with d spanning four decades.
func TestPreconditionedMatchesDenseRandom(t *testing.T) {
	const n = 40
	r := rand.New(rand.NewPCG(7, 8))
	for _, shift := range []float64{float64(n), 0} { // +n·I: SPD; 0: indefinite
		a := mat.NewDense(n, n, nil)
		for i := range n {
			for j := range n {
				a.Set(i, j, r.NormFloat64())
			}
		}
		s := mat.NewSymDense(n, nil)
		for i := range n {
			for j := i; j < n; j++ {
				s.SetSym(i, j, (a.At(i, j)+a.At(j, i))/2)
			}
			s.SetSym(i, i, s.At(i, i)+shift)
		}
		d := make([]float64, n)
		for i := range d {
			d[i] = math.Pow(10, 4*r.Float64()-2)
		}
		pre, err := hvp.NewPreconditioned(hvp.NewDense(s), d)
		if err != nil {
			t.Fatal(err)
		}
		d[0] = -1 // the wrapper copied d
		want := eigs(t, scaled(s, pre.Scale()))
		if shift > 0 && want[0] <= 0 {
			t.Fatalf("test matrix not SPD: λmin = %g", want[0])
		}
		if shift == 0 && want[0] >= 0 {
			t.Fatalf("test matrix not indefinite: λmin = %g", want[0])
		}
		got := topEigen(t, pre)
		w := want[n-1]
		if rel := math.Abs(got.Values[0]-w) / math.Abs(w); rel > 1e-8 {
			t.Errorf("shift %g: λ1 = %.15g, dense %.15g (rel %.2g)", shift, got.Values[0], w, rel)
		}
	}
}

func TestPreconditionedValidation(t *testing.T) {
	op := hvp.NewDense(mat.NewSymDense(2, []float64{1, 0, 0, 1}))
	for _, d := range [][]float64{{1}, {1, 0}, {1, -1}, {1, math.NaN()}, {1, math.Inf(1)}} {
		if _, err := hvp.NewPreconditioned(op, d); err == nil {
			t.Errorf("NewPreconditioned accepted d = %v", d)
		}
		if _, err := hvp.NewInversePreconditioned(op, d); err == nil {
			t.Errorf("NewInversePreconditioned accepted p = %v", d)
		}
	}
	pre, _ := hvp.NewPreconditioned(op, []float64{2, 3})
	dst := make([]float64, 2)
	if err := pre.Apply(dst, []float64{1, 1}); err != nil || dst[0] != 4 || dst[1] != 9 {
		t.Errorf("D·I·D·1 = %v (%v), want [4 9]", dst, err)
	}
	if err := pre.Apply(dst[:1], []float64{1, 1}); err == nil {
		t.Error("wrong length accepted")
	}
}
