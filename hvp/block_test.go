package hvp_test

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// principal returns the dense principal submatrix of h on the coordinates
// of ranges, in their order.
func principal(h *mat.SymDense, ranges []hvp.Range) *mat.SymDense {
	var idx []int
	for _, r := range ranges {
		for i := r.Offset; i < r.Offset+r.Len; i++ {
			idx = append(idx, i)
		}
	}
	s := mat.NewSymDense(len(idx), nil)
	for a, i := range idx {
		for b := a; b < len(idx); b++ {
			s.SetSym(a, b, h.At(i, idx[b]))
		}
	}
	return s
}

// TestBlockEigenMatchesDense: on a trained 6-5-3 tanh MLP, λ1 of every
// parameter block, and of two merged non-contiguous groups, equals the top
// eigenvalue of the dense principal submatrix (mat.EigenSym) to 1e-8, and
// lies in [λmin(H), λ1(H)] (Cauchy interlacing).
func TestBlockEigenMatchesDense(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ds := data.Synthetic(40, net.InShape(), 3, 2)
	if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.1},
		Data: ds, BatchSize: 0, Steps: 30, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	op, err := hessian.NewExact(net, trainer.HeadBatch(ds, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	h := denseOf(t, op)
	all := eigs(t, h)
	lmin, lmax := all[0], all[len(all)-1]
	blocks := hessian.Blocks(net)
	groups := estimators.GroupBlocks(blocks, nil)
	// fc1.weight with fc2.weight (not adjacent: fc1.bias sits between), and the biases.
	merged := estimators.GroupBlocks(blocks, []estimators.GroupRule{
		{Name: "weights", Pattern: regexp.MustCompile(`\.weight$`)},
		{Name: "biases", Pattern: regexp.MustCompile(`\.bias$`)},
	})
	if len(merged) != 2 || len(merged[0].Blocks) != 2 || merged[0].Blocks[1].Offset == merged[0].Blocks[0].Offset+merged[0].Blocks[0].Len {
		t.Fatalf("merged groups %+v: want two groups of two non-adjacent blocks", merged)
	}
	groups = append(groups, merged...)
	counting := &hvp.Counting{Op: op}
	res, _, err := estimators.BlockEigen(context.Background(), counting, groups, estimators.EigenOptions{Tol: 1e-12, MaxHVPs: 3000, Seed: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, g := range groups {
		want := eigs(t, principal(h, g.Ranges()))
		w := want[len(want)-1]
		r := res[i]
		if r.Name != g.Name || r.Dim != g.Len() {
			t.Errorf("result %d is %q dim %d, want %q dim %d", i, r.Name, r.Dim, g.Name, g.Len())
		}
		if math.Abs(r.Value-w) > 1e-8*math.Max(1, math.Abs(w)) {
			t.Errorf("%s: λ1(H_bb) = %.15g, dense %.15g", g.Name, r.Value, w)
		}
		if r.Value > lmax+1e-10 || r.Value < lmin-1e-10 {
			t.Errorf("%s: λ1(H_bb) = %g outside [λmin, λ1] = [%g, %g]", g.Name, r.Value, lmin, lmax)
		}
		t.Logf("%-10s dim %3d  λ1 = %.10g (dense %.10g)  residual %.1e  %d HVPs", g.Name, r.Dim, r.Value, w, r.Residual, r.HVPs)
		total += r.HVPs
	}
	if total != counting.Count() {
		t.Errorf("reported %d HVPs, the operator counted %d full products", total, counting.Count())
	}
}

func TestRestrictedEmbedsAndValidates(t *testing.T) {
	// H = diag(1..6) + 1·1ᵀ: the submatrix on {4,5,0} has known entries.
	const n = 6
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			s.SetSym(i, j, 1)
		}
		s.SetSym(i, i, float64(i+2))
	}
	op := hvp.NewDense(s)
	r, err := hvp.NewRestricted(op, []hvp.Range{{Offset: 4, Len: 2}, {Offset: 0, Len: 1}})
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float64, 3)
	if err := r.Apply(dst, []float64{1, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if want := []float64{6, 1, 1}; dst[0] != want[0] || dst[1] != want[1] || dst[2] != want[2] {
		t.Errorf("column 0 of H_SS = %v, want %v", dst, want)
	}
	for _, bad := range [][]hvp.Range{nil, {{Offset: 5, Len: 2}}, {{Offset: -1, Len: 1}}, {{Offset: 0, Len: 0}}, {{Offset: 0, Len: 3}, {Offset: 2, Len: 1}}} {
		if _, err := hvp.NewRestricted(op, bad); err == nil {
			t.Errorf("NewRestricted accepted %v", bad)
		}
	}
	b, err := hvp.NewBlock(op, 2, 3)
	if err != nil || b.Dim() != 3 {
		t.Fatalf("NewBlock: dim %v, %v", b, err)
	}
	if err := b.Apply(dst[:2], []float64{1, 1, 1}); err == nil {
		t.Error("wrong length accepted")
	}
}

// TestWrappersConcurrent: the wrappers' pooled buffers keep concurrent
// Apply calls apart (run with -race).
func TestWrappersConcurrent(t *testing.T) {
	const n = 30
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			s.SetSym(i, j, math.Cos(float64(i*n+j)))
		}
	}
	d := make([]float64, n)
	for i := range d {
		d[i] = 1 + float64(i)/n
	}
	pre, _ := hvp.NewPreconditioned(hvp.NewDense(s), d)
	res, _ := hvp.NewRestricted(hvp.NewDense(s), []hvp.Range{{Offset: 20, Len: 10}, {Offset: 0, Len: 5}})
	for _, op := range []hvp.Operator{pre, res} {
		m := op.Dim()
		want := make([][]float64, 8)
		for g := range want {
			v := make([]float64, m)
			v[g%m] = 1
			want[g] = make([]float64, m)
			if err := op.Apply(want[g], v); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, len(want))
		for g := range want {
			go func() {
				v, dst := make([]float64, m), make([]float64, m)
				v[g%m] = 1
				for range 200 {
					if err := op.Apply(dst, v); err != nil {
						errs <- err
						return
					}
					for i := range dst {
						if dst[i] != want[g][i] {
							errs <- fmt.Errorf("goroutine %d: concurrent product differs at %d", g, i)
							return
						}
					}
				}
				errs <- nil
			}()
		}
		for range want {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
}
