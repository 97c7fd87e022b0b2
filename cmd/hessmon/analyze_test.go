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

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// TestAnalyzeMatchesDenseTruth runs `hessmon analyze` on a trained MNIST MLP
// small enough (1,602 parameters) for a dense eigendecomposition, and
// requires the top-5 eigenvalues to 1e-6 relative and the true trace inside
// the reported 95% confidence interval (issue B).
func TestAnalyzeMatchesDenseTruth(t *testing.T) {
	train, _, err := data.LoadMNIST("")
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
	op, err := hessian.NewExact(net, trainer.HeadBatch(train, batch), trainer.CrossEntropy{}, trainer.ModeEval)
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

// TestAnalyzeBlocks runs `hessmon analyze --blocks --json` on a small
// synthetic model and checks the per-block λ1: one per parameter tensor,
// certified by small residuals, the largest ≤ the full λ1 (Cauchy
// interlacing: H_bb is a principal submatrix of H), the HVP total the sum
// of the blocks', and the small fc2 blocks equal to the dense truth.
func TestAnalyzeBlocks(t *testing.T) {
	args := []string{"analyze", "--data", "synthetic", "--hidden", "4", "--act", "tanh", "--batch", "200", "--train-steps", "40",
		"--top", "1", "--tol", "1e-10", "--trace=false", "--esd=false", "--blocks", "--json"}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), args, &out, &errOut); code != 0 {
		t.Fatalf("analyze exited %d: %s", code, errOut.String())
	}
	var res struct {
		Eigenvalues  []float64 `json:"eigenvalues"`
		Residuals    []float64 `json:"residuals"`
		BlockLambda1 []struct {
			Name      string  `json:"name"`
			Dim       int     `json:"dim"`
			Value     float64 `json:"value"`
			Residual  float64 `json:"residual"`
			HVPs      int     `json:"hvps"`
			Converged bool    `json:"converged"`
		} `json:"block_lambda1"`
		HVPs struct{ Eigen, Blocks int } `json:"hvps"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out.String())
	}
	names := []string{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
	if len(res.BlockLambda1) != len(names) || len(res.Eigenvalues) != 1 {
		t.Fatalf("want λ1 and 4 block λ1, got %s", out.String())
	}
	full := res.Eigenvalues[0]
	largest, sum := math.Inf(-1), 0
	for i, b := range res.BlockLambda1 {
		if b.Name != names[i] || !b.Converged || !(b.Residual <= 1e-8*math.Abs(full)) || b.HVPs <= 0 {
			t.Errorf("block %d: %+v", i, b)
		}
		largest = math.Max(largest, b.Value)
		sum += b.HVPs
	}
	t.Logf("λ1 = %.10g (residual %.1e); largest block λ1 = %.10g; HVPs eigen %d, blocks %d", full, res.Residuals[0], largest, res.HVPs.Eigen, sum)
	if largest > full+res.Residuals[0] {
		t.Errorf("largest block λ1 %.12g > full λ1 %.12g: interlacing violated", largest, full)
	}
	if sum != res.HVPs.Blocks {
		t.Errorf("hvps.blocks = %d, the blocks' sum %d", res.HVPs.Blocks, sum)
	}

	// Dense truth of fc2.weight and fc2.bias (the last 4·10+10 coordinates)
	// from the same model, rebuilt as analyze builds it.
	train := data.Synthetic(6000, trainer.Shape{H: 28, W: 28, C: 1}, 10, 1).Flat()
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{784, 4, 10}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
		Data: train, BatchSize: 64, Steps: 40, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	op, err := hessian.NewExact(net, trainer.HeadBatch(train, 200), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for i, b := range hessian.Blocks(net) {
		if b.Len > 40 {
			continue
		}
		checked++
		h := mat.NewSymDense(b.Len, nil)
		e, col := make([]float64, op.Dim()), make([]float64, op.Dim())
		for j := range b.Len {
			e[b.Offset+j] = 1
			if err := op.Apply(col, e); err != nil {
				t.Fatal(err)
			}
			e[b.Offset+j] = 0
			for k := 0; k <= j; k++ {
				h.SetSym(k, j, col[b.Offset+k])
			}
		}
		var es mat.EigenSym
		if !es.Factorize(h, false) {
			t.Fatal("EigenSym failed")
		}
		v := es.Values(nil)
		if got, want := res.BlockLambda1[i].Value, v[len(v)-1]; math.Abs(got-want) > 1e-8*math.Abs(want) {
			t.Errorf("%s: analyze λ1 %.12g, dense %.12g", b.Name, got, want)
		}
	}
	if checked != 3 {
		t.Errorf("checked %d blocks against the dense truth, want 3 (fc1.bias, fc2.weight, fc2.bias)", checked)
	}
}
