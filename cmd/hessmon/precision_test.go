package main

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestAnalyzePrecision: the same analysis in float32 and float64 agrees to
// the documented float32 accuracy, says float32 in its JSON, and leaves the
// float64 JSON without a precision field (its output is unchanged).
func TestAnalyzePrecision(t *testing.T) {
	type result struct {
		Eigenvalues []float64 `json:"eigenvalues"`
		Residuals   []float64 `json:"residuals"`
		Trace       float64   `json:"trace"`
		Precision   *string   `json:"precision"`
	}
	var res [2]result
	for i, prec := range []string{"float64", "float32"} {
		// One --tol for both (float32's default, 1e-6, is looser than
		// float64's), so that both spend their HVPs alike.
		code, out, errOut := runCmd("analyze", "--hidden", "8", "--batch", "200", "--train-steps", "30", "--top", "3",
			"--esd-steps", "20", "--max-hvps", "300", "--tol", "1e-6", "--precision", prec, "--json")
		if code != 0 {
			t.Fatalf("analyze --precision %s exited %d: %s", prec, code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &res[i]); err != nil {
			t.Fatal(err)
		}
	}
	if res[0].Precision != nil {
		t.Errorf("float64 output has a precision field %q", *res[0].Precision)
	}
	if p := res[1].Precision; p == nil || *p != "float32" {
		t.Errorf("float32 output does not say float32: %v", p)
	}
	l1 := res[0].Eigenvalues[0]
	for i, want := range res[0].Eigenvalues {
		if d := math.Abs(res[1].Eigenvalues[i]-want) / l1; !(d <= 1e-5) {
			t.Errorf("λ%d: float32 %.9g, float64 %.9g (%.2g of λ1)", i+1, res[1].Eigenvalues[i], want, d)
		}
		if r := res[1].Residuals[i]; !(r > 0 && r <= 1e-5*l1) {
			t.Errorf("float32 residual %d = %.3g, want in (0, 1e-5·λ1]", i+1, r)
		}
	}
	if d := math.Abs(res[1].Trace-res[0].Trace) / math.Abs(res[0].Trace); !(d <= 1e-5) {
		t.Errorf("trace: float32 %v, float64 %v", res[1].Trace, res[0].Trace)
	}
}

// TestPrecisionRefused: float32 on a model it does not cover, or an
// unknown precision, is a usage error that says what to do, not a panic.
func TestPrecisionRefused(t *testing.T) {
	for _, args := range [][]string{
		{"analyze", "--hidden", "4", "--bn", "--batch", "50", "--train-steps", "0", "--precision", "float32"},
		{"train", "--model", "cnn", "--steps", "1", "--listen", "off", "--precision", "float32", "--db", t.TempDir() + "/x.db"},
		{"bench", "hvp", "--precision", "float16"},
	} {
		code, _, errOut := runCmd(args...)
		if code == 0 {
			t.Errorf("%v succeeded", args)
			continue
		}
		if strings.Contains(errOut, "panic") || !strings.Contains(errOut, "precision") {
			t.Errorf("%v: %s", args, errOut)
		}
		t.Logf("%v → %s", args, strings.TrimSpace(errOut))
	}
}
