package hessian

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
)

// Documented float32 tolerances (docs/benchmarks.md, "Precision"): H·v in
// float32 agrees with float64 to a relative error of a few 10⁻⁷ on these
// small models (about √k·2⁻²⁴ for inner sizes k); the bound checked leaves
// a factor of ten or more.
const (
	hv32RelTol  = 1e-5 // ‖H·v₃₂ − H·v₆₄‖ / ‖H·v₆₄‖
	eig32RelTol = 1e-5 // |λ₃₂ − λ| / |λ1| for λ1..5 and λmin
	eig64RelTol = 1e-9
)

// randomBatch is n samples of in features with labels (classes > 0) or
// MSE targets of width out; the first zeroCols features are zero in every
// sample, as MNIST's border pixels are, so the input packing runs.
func randomBatch(n, in, classes, out, zeroCols int, seed uint64) trainer.Batch {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := trainer.NewTensor(n, trainer.Shape{H: 1, W: 1, C: in})
	for i := range x.Data {
		if i%in >= zeroCols {
			x.Data[i] = rng.NormFloat64()
		}
	}
	b := trainer.Batch{X: x}
	if classes > 0 {
		for range n {
			b.Labels = append(b.Labels, rng.IntN(classes))
		}
	} else {
		for range n * out {
			b.Targets = append(b.Targets, rng.NormFloat64())
		}
	}
	return b
}

func relDist(a, b []float64) float64 { return floats.Distance(a, b, 2) / floats.Norm(b, 2) }

// TestExact32AgreesWithFloat64 compares float32 H·v with the float64 R-op
// on the MLP family: every activation, both losses, one batch and chunks,
// with and without packed zero input columns.
func TestExact32AgreesWithFloat64(t *testing.T) {
	cases := []struct {
		name    string
		sizes   []int
		act     trainer.Activation
		mse     bool
		chunk   int
		zeroCol int
	}{
		{"tanh-ce-packed", []int{40, 24, 16, 5}, trainer.Tanh, false, 0, 8},
		{"relu-ce", []int{12, 20, 4}, trainer.ReLU, false, 0, 0},
		{"gelu-mse", []int{10, 16, 16, 3}, trainer.GELU, true, 0, 0},
		{"gelu-ce-chunks", []int{30, 16, 6}, trainer.GELU, false, 23, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: c.sizes, Activation: c.act}, 7)
			if err != nil {
				t.Fatal(err)
			}
			classes, out := c.sizes[len(c.sizes)-1], c.sizes[len(c.sizes)-1]
			var loss trainer.Loss = trainer.CrossEntropy{}
			if c.mse {
				classes, loss = 0, trainer.MSE{}
			}
			b := randomBatch(64, c.sizes[0], classes, out, c.zeroCol, 3)
			op64, err := NewOperator(net, b, loss, trainer.ModeEval, Options{MaxChunk: c.chunk})
			if err != nil {
				t.Fatal(err)
			}
			op32, err := NewOperator(net, b, loss, trainer.ModeEval, Options{MaxChunk: c.chunk, Precision: snapshot.Float32})
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := op32.(interface{ Precision() snapshot.Precision }); !ok || p.Precision() != snapshot.Float32 {
				t.Fatalf("float32 operator does not report its precision")
			}
			l64, l32 := op64.(interface{ Loss() float64 }).Loss(), op32.(interface{ Loss() float64 }).Loss()
			if math.Abs(l32-l64) > 1e-6*math.Abs(l64) {
				t.Errorf("loss %v in float32, %v in float64", l32, l64)
			}
			rng := rand.New(rand.NewPCG(9, 9))
			v, h64, h32 := make([]float64, op64.Dim()), make([]float64, op64.Dim()), make([]float64, op64.Dim())
			for range 3 {
				for i := range v {
					v[i] = rng.NormFloat64()
				}
				if err := op64.Apply(h64, v); err != nil {
					t.Fatal(err)
				}
				if err := op32.Apply(h32, v); err != nil {
					t.Fatal(err)
				}
				d := relDist(h32, h64)
				if !(d <= hv32RelTol) {
					t.Fatalf("float32 H·v differs from float64 by %.3g relative, want ≤ %g", d, hv32RelTol)
				}
				if d == 0 {
					t.Fatalf("float32 H·v is bitwise float64's: the float32 path did not run")
				}
				t.Logf("‖H·v₃₂ − H·v₆₄‖/‖H·v₆₄‖ = %.2g", d)
			}
		})
	}
}

// TestExact32DenseTruth: the top 5 eigenvalues and λmin from the
// estimators on the float32 operator, against the dense float64 Hessian's
// (gonum mat.EigenSym), and their residuals recomputed with the dense
// matrix: the residual the estimator reports is the one of the float32
// products, so it may differ from the true one by about the float32 error
// of H·v, never by more.
func TestExact32DenseTruth(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{10, 12, 8, 4}, Activation: trainer.Tanh}, 11)
	if err != nil {
		t.Fatal(err)
	}
	b := randomBatch(80, 10, 4, 4, 2, 5)
	op64, err := NewExact(net, b, trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	n := op64.Dim()
	cols := mat.NewDense(n, n, nil)
	e, col := make([]float64, n), make([]float64, n)
	for j := range n {
		e[j] = 1
		if err := op64.Apply(col, e); err != nil {
			t.Fatal(err)
		}
		e[j] = 0
		cols.SetCol(j, col)
	}
	dense := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			dense.SetSym(i, j, (cols.At(i, j)+cols.At(j, i))/2)
		}
	}
	var es mat.EigenSym
	if !es.Factorize(dense, false) {
		t.Fatal("EigenSym failed")
	}
	truth := es.Values(nil) // ascending
	top := []float64{truth[n-1], truth[n-2], truth[n-3], truth[n-4], truth[n-5]}
	lmin := truth[0]
	scale := math.Abs(top[0])

	for _, prec := range []snapshot.Precision{snapshot.Float64, snapshot.Float32} {
		t.Run(string(prec), func(t *testing.T) {
			op, err := NewOperator(net, b, trainer.CrossEntropy{}, trainer.ModeEval, Options{Precision: prec})
			if err != nil {
				t.Fatal(err)
			}
			tol, eigTol := eig64RelTol, 1e-10
			if prec == snapshot.Float32 {
				tol, eigTol = eig32RelTol, 1e-5
			}
			ctx := context.Background()
			res, _, err := estimators.TopEigen(ctx, op, estimators.EigenOptions{K: 5, Tol: eigTol, MaxHVPs: 2000, Seed: 1, KeepVectors: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			low, _, err := estimators.TopEigen(ctx, negated{op}, estimators.EigenOptions{K: 1, Tol: eigTol, MaxHVPs: 2000, Seed: 2, KeepVectors: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			low.Values[0] = -low.Values[0]
			got := append([]float64(nil), res.Values...)
			sort.Sort(sort.Reverse(sort.Float64Slice(got)))
			for i, want := range top {
				if d := math.Abs(got[i]-want) / scale; !(d <= tol) {
					t.Errorf("λ%d = %.9g, dense %.9g: %.2g relative to λ1, want ≤ %g", i+1, got[i], want, d, tol)
				}
			}
			if d := math.Abs(low.Values[0]-lmin) / scale; !(d <= tol) {
				t.Errorf("λmin = %.9g, dense %.9g: %.2g relative to λ1, want ≤ %g", low.Values[0], lmin, d, tol)
			}
			checkResiduals(t, dense, op, res, scale)
			low.Values[0] = -low.Values[0] // a pair of −H, checked as such
			negDense := mat.NewSymDense(n, nil)
			negDense.ScaleSym(-1, dense)
			checkResiduals(t, negDense, negated{op}, low, scale)
		})
	}
}

// negated is −H, whose top eigenvalue is −λmin(H).
type negated struct{ hvp.Operator }

func (o negated) Apply(dst, v []float64) error {
	if err := o.Operator.Apply(dst, v); err != nil {
		return err
	}
	floats.Scale(-1, dst)
	return nil
}

// checkResiduals recomputes ‖Hv − λv‖ for each returned pair with the
// dense float64 Hessian and with the operator itself. The estimators take
// residuals from the Krylov relation of the operator's products, so the
// operator's own residual may exceed the reported one by its rounding
// floor, and the true one by that plus the operator's error ‖(H₃₂ − H)v‖:
// both are bounded by hv32RelTol·‖H‖ (≈ 10⁻⁵‖H‖; ~2·10⁻⁷ measured).
func checkResiduals(t *testing.T, dense *mat.SymDense, op hvp.Operator, r estimators.EigenResult, scale float64) {
	t.Helper()
	n := op.Dim()
	hv, opv := mat.NewVecDense(n, nil), make([]float64, n)
	floor := 1e-12 * scale
	if p, ok := op.(interface{ Precision() snapshot.Precision }); ok && p.Precision() == snapshot.Float32 {
		floor = hv32RelTol * scale
	}
	if neg, ok := op.(negated); ok {
		if p, ok := neg.Operator.(interface{ Precision() snapshot.Precision }); ok && p.Precision() == snapshot.Float32 {
			floor = hv32RelTol * scale
		}
	}
	for i, v := range r.Vectors {
		hv.MulVec(dense, mat.NewVecDense(n, v))
		if err := op.Apply(opv, v); err != nil {
			t.Fatal(err)
		}
		trueRes, opRes := make([]float64, n), make([]float64, n)
		for j := range n {
			trueRes[j] = hv.AtVec(j) - r.Values[i]*v[j]
			opRes[j] = opv[j] - r.Values[i]*v[j]
		}
		tr, or, rep := floats.Norm(trueRes, 2), floats.Norm(opRes, 2), r.Residuals[i]
		if !(or <= 1.1*rep+floor) {
			t.Errorf("pair %d: the operator's own ‖Hv−λv‖ %.3g exceeds the reported residual %.3g by more than %.3g", i, or, rep, floor)
		}
		if !(tr <= 1.1*rep+floor) {
			t.Errorf("pair %d: the true ‖Hv−λv‖ %.3g exceeds the reported residual %.3g by more than %.3g", i, tr, rep, floor)
		}
		t.Logf("λ=%.9g reported residual %.2g, the operator's %.2g, true %.2g (‖H‖ %.3g)", r.Values[i], rep, or, tr, scale)
	}
}

// TestExact32Unsupported: models outside the MLP family get an error that
// names the float32 limit and the way out, never a panic or a partial
// operator.
func TestExact32Unsupported(t *testing.T) {
	bn, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.ReLU, BN: true}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cnn, err := trainer.NewCNN(trainer.CNNConfig{In: trainer.Shape{H: 4, W: 4, C: 1}, Channels: []int{2}, Hidden: 4, Classes: 3, Activation: trainer.ReLU}, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, net := range []*trainer.Network{bn, cnn} {
		x := trainer.NewTensor(4, net.InShape())
		b := trainer.Batch{X: x, Labels: []int{0, 1, 2, 0}}
		op, err := NewOperator(net, b, trainer.CrossEntropy{}, trainer.ModeEval, Options{Precision: snapshot.Float32})
		if !errors.Is(err, trainer.ErrFloat32Unsupported) {
			t.Fatalf("%s: err = %v, want ErrFloat32Unsupported", net, err)
		}
		if op != nil {
			t.Fatalf("%s: got an operator %T with the error", net, op)
		}
		t.Log(err)
	}
}
