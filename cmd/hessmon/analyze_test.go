package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"sort"
	"testing"

	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/stat/distuv"

	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// TestAnalyzeMatchesDenseTruth runs `hessmon analyze` on a trained MNIST MLP
// small enough (1,602 parameters) for a dense eigendecomposition, and
// requires the top-5 eigenvalues to 1e-6 relative and the true trace inside
// the reported 95% confidence interval (issue B).
func TestAnalyzeMatchesDenseTruth(t *testing.T) {
	train, _, err := trainer.LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	train = train.Flat()
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{784, 2, 10}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: trainer.CrossEntropy{},
		Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9}, Data: train, BatchSize: 64, Steps: 150, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	weights := t.TempDir() + "/w.safetensors"
	if err := trainer.SaveSafetensors(net, weights); err != nil {
		t.Fatal(err)
	}
	const batch = 300
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"analyze", "--hidden", "2", "--act", "tanh", "--weights", weights, "--batch", "300",
		"--top", "5", "--tol", "1e-10", "--trace-tol", "0.02", "--esd-steps", "60", "--json"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("analyze exited %d: %s", code, errOut.String())
	}
	var res struct {
		Params      int                `json:"params"`
		Eigenvalues []float64          `json:"eigenvalues"`
		Residuals   []float64          `json:"residuals"`
		Trace       float64            `json:"trace"`
		TraceStdErr float64            `json:"trace_stderr"`
		TraceProbes int                `json:"trace_probes"`
		BlockTraces map[string]float64 `json:"block_traces"`
		ESD         struct {
			Nodes   []float64 `json:"nodes"`
			Weights []float64 `json:"weights"`
		} `json:"esd"`
		HVPs struct{ Eigen, Trace, ESD int } `json:"hvps"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}

	// Dense truth from n exact HVPs.
	op, err := hessian.NewExact(net, train.Head(batch), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	n := op.Dim()
	if n != res.Params || n > 3000 {
		t.Fatalf("params: analyze %d, model %d", res.Params, n)
	}
	h := mat.NewSymDense(n, nil)
	e, col := make([]float64, n), make([]float64, n)
	for j := 0; j < n; j++ {
		e[j] = 1
		if err := op.Apply(col, e); err != nil {
			t.Fatal(err)
		}
		e[j] = 0
		for i := 0; i <= j; i++ {
			h.SetSym(i, j, col[i])
		}
	}
	var es mat.EigenSym
	if !es.Factorize(h, false) {
		t.Fatal("dense eigendecomposition failed")
	}
	vals := es.Values(nil)
	sort.Sort(sort.Reverse(sort.Float64Slice(vals)))
	for i := 0; i < 5; i++ {
		rel := math.Abs(res.Eigenvalues[i]-vals[i]) / math.Abs(vals[0])
		t.Logf("λ%d analyze %.12g dense %.12g rel.err %.1e residual %.1e", i+1, res.Eigenvalues[i], vals[i], rel, res.Residuals[i])
		if rel > 1e-6 {
			t.Errorf("λ%d: analyze %v, dense %v (rel. error %.2e)", i+1, res.Eigenvalues[i], vals[i], rel)
		}
	}
	truth := mat.Trace(h)
	q := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(res.TraceProbes - 1)}.Quantile(0.975)
	lo, hi := res.Trace-q*res.TraceStdErr, res.Trace+q*res.TraceStdErr
	t.Logf("trace analyze %.6g ± %.2g (95%% CI [%.6g, %.6g], %d probes), dense %.6g", res.Trace, res.TraceStdErr, lo, hi, res.TraceProbes, truth)
	if truth < lo || truth > hi {
		t.Errorf("dense trace %v outside the reported 95%% CI [%v, %v]", truth, lo, hi)
	}
	var blocks float64
	for _, v := range res.BlockTraces {
		blocks += v
	}
	if len(res.BlockTraces) != 4 {
		t.Errorf("want 4 block traces (fc1.weight, fc1.bias, fc2.weight, fc2.bias), got %v", res.BlockTraces)
	}
	// The first spectral moment of the quadrature is tr(H)/n from one probe:
	// it must be a plausible estimate, not a bug-level miss.
	var m1, wsum float64
	for i, x := range res.ESD.Nodes {
		m1 += res.ESD.Weights[i] * x
		wsum += res.ESD.Weights[i]
	}
	if math.Abs(wsum-1) > 1e-12 {
		t.Errorf("ESD weights sum to %v", wsum)
	}
	if math.Abs(vals[0]-maxOf(res.ESD.Nodes)) > 1e-6*vals[0] {
		t.Errorf("largest ESD node %v, λ1 %v: 60 Lanczos steps should find λ1", maxOf(res.ESD.Nodes), vals[0])
	}
	t.Logf("ESD mean %.4g vs tr/n %.4g; HVPs eigen %d trace %d esd %d", m1, truth/float64(n), res.HVPs.Eigen, res.HVPs.Trace, res.HVPs.ESD)
}

func maxOf(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = math.Max(m, x)
	}
	return m
}
