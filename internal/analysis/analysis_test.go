package analysis

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// TestRunMatchesDenseHessian: the analysis's top eigenvalues are the dense
// Hessian's to the residual they certify, its trace estimate lies within 4
// standard errors of the exact trace, and the block λ1s are what their
// report prints.
func TestRunMatchesDenseHessian(t *testing.T) {
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{5, 4, 3}, Activation: trainer.Tanh}, 3)
	if err != nil {
		t.Fatal(err)
	}
	d := data.Synthetic(40, net.InShape(), 3, 3)
	op, err := hessian.NewExact(net, trainer.HeadBatch(d, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	n := net.Dim()
	cols := make([][]float64, n)
	e := make([]float64, n)
	for j := range n {
		e[j], cols[j] = 1, make([]float64, n)
		if err := op.Apply(cols[j], e); err != nil {
			t.Fatal(err)
		}
		e[j] = 0
	}
	dense := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			dense.SetSym(i, j, (cols[j][i]+cols[i][j])/2)
		}
	}
	var es mat.EigenSym
	if !es.Factorize(dense, false) {
		t.Fatal("EigenSym failed")
	}
	vals := es.Values(nil) // ascending
	trace := 0.0
	for i := range n {
		trace += dense.At(i, i)
	}
	res := Result{Converged: true}
	_, err = Run(context.Background(), &res, Options{Order: estimators.Algebraic, Top: 3, MaxHVPs: 400, TraceMax: 200, Tol: 1e-8, TraceTol: 0.01,
		Trace: true, Blocks: true, Seed: 1}, op, net)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Converged || len(res.Eigenvalues) != 3 {
		t.Fatalf("converged %v with %d eigenvalues, want 3 converged", res.Converged, len(res.Eigenvalues))
	}
	for i, v := range res.Eigenvalues {
		if want := vals[n-1-i]; math.Abs(v-want) > 1e-6*math.Abs(vals[n-1]) {
			t.Errorf("λ%d = %v, dense %v", i+1, v, want)
		}
	}
	if res.Trace == nil {
		t.Fatal("no trace")
	}
	if math.Abs(*res.Trace-trace) > 4**res.TraceStdErr+1e-9 {
		t.Errorf("trace %v ± %v, dense %v", *res.Trace, *res.TraceStdErr, trace)
	}
	if len(res.BlockLambda1) == 0 || res.HVPs.Blocks == 0 {
		t.Fatalf("no block λ1s (%d HVPs)", res.HVPs.Blocks)
	}
	var out bytes.Buffer
	if err := res.WriteText(&out, 0.01); err != nil {
		t.Fatal(err)
	}
	for _, b := range res.BlockLambda1 {
		if b.Value > vals[n-1]*(1+1e-6) {
			t.Errorf("block %s: λ1 %v above the whole Hessian's %v", b.Name, b.Value, vals[n-1])
		}
		if !strings.Contains(out.String(), b.Name) {
			t.Errorf("report lacks block %s:\n%s", b.Name, out.String())
		}
	}
}
