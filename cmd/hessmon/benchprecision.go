package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// precisionBench is bench hvp's float32 section: float32 and float64 HVPs
// on the same weights, batch and v, timed alternately in one loop so that
// the machine's load falls on both alike.
type precisionBench struct {
	Precision      snapshot.Precision `json:"precision"`
	HVPSeconds     float64            `json:"hvp_seconds"`
	Float64Seconds float64            `json:"float64_hvp_seconds"`
	Ratio          float64            `json:"float32_over_float64"`
	// HVRelDiff is ‖H·v₃₂ − H·v₆₄‖ / ‖H·v₆₄‖.
	HVRelDiff float64 `json:"hv_rel_diff"`
	Probe     struct {
		Batch          int     `json:"batch"`
		HVPSeconds     float64 `json:"hvp_seconds"`
		Float64Seconds float64 `json:"float64_hvp_seconds"`
		Ratio          float64 `json:"float32_over_float64"`
	} `json:"probe"`
	// Torch is torch's float32 HVP on the same weights (--vs-torch), its
	// HVPRatio hessmon's float32 hvp_seconds ÷ torch's.
	Torch *torchBench `json:"torch,omitempty"`
}

// torchRun is how --vs-torch runs the reference script; hv is hessmon's
// float64 H·v, the script's reference.
type torchRun struct {
	python, script string
	threads        int
	hv             []float64
}

// benchHVP32 times float32 against float64 HVPs on b and on the probe
// batch pb, interleaved rep by rep, and with vsTorch torch's float32 HVP.
func benchHVP32(ctx context.Context, net *trainer.Network, b, pb trainer.Batch, v []float64, reps int, torch *torchRun, vsTorch bool) (*precisionBench, error) {
	loss := trainer.CrossEntropy{}
	ops := make([]hvp.Operator, 4) // float64 b, float32 b, float64 pb, float32 pb
	for i := range ops {
		bt, prec := b, snapshot.Float64
		if i >= 2 {
			bt = pb
		}
		if i%2 == 1 {
			prec = snapshot.Float32
		}
		op, err := hessian.NewOperator(net, bt, loss, trainer.ModeEval, hessian.Options{Precision: prec})
		if err != nil {
			return nil, fmt.Errorf("bench hvp --precision float32: %w", err)
		}
		ops[i] = op
	}
	n := net.Dim()
	hv := [][]float64{make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)}
	times := make([][]float64, 4)
	for r := -2; r < reps; r++ {
		for i, op := range ops {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			t0 := time.Now()
			if err := op.Apply(hv[i], v); err != nil {
				return nil, err
			}
			if r >= 0 {
				times[i] = append(times[i], time.Since(t0).Seconds())
			}
		}
	}
	res := &precisionBench{Precision: snapshot.Float32, Float64Seconds: median(times[0]), HVPSeconds: median(times[1])}
	res.Ratio = res.HVPSeconds / res.Float64Seconds
	res.HVRelDiff = floats.Distance(hv[1], hv[0], 2) / floats.Norm(hv[0], 2)
	res.Probe.Batch, res.Probe.Float64Seconds, res.Probe.HVPSeconds = pb.Len(), median(times[2]), median(times[3])
	res.Probe.Ratio = res.Probe.HVPSeconds / res.Probe.Float64Seconds
	if vsTorch {
		t, err := runTorch(ctx, torch.python, torch.script, torch.threads, "float32", net, b, v, torch.hv, reps)
		if err != nil {
			return nil, err
		}
		t.HVPRatio = res.HVPSeconds / t.HVPSeconds
		res.Torch = t
	}
	return res, nil
}

// printHVP32 is the text form of the float32 section.
func printHVP32(w io.Writer, p *precisionBench, batch int) {
	fmt.Fprintf(w, "  float32 HVP, batch %-4d %6.2f ms   float64 %.2f ms in the same loop: %.2f×   |Hv₃₂ − Hv₆₄|/|Hv₆₄| = %.1e\n",
		batch, p.HVPSeconds*1e3, p.Float64Seconds*1e3, p.Ratio, p.HVRelDiff)
	fmt.Fprintf(w, "  float32 probe HVP, batch %-3d %6.2f ms   float64 %.2f ms: %.2f×\n",
		p.Probe.Batch, p.Probe.HVPSeconds*1e3, p.Probe.Float64Seconds*1e3, p.Probe.Ratio)
	if t := p.Torch; t != nil {
		fmt.Fprintf(w, "  torch %s float32 (%d threads): retained graph %.2f ms, hessmon float32 %.2f× it; |Hv_torch32 − Hv₆₄|/|Hv₆₄| = %.1e\n",
			t.Version, t.Threads, t.HVPSeconds*1e3, t.HVPRatio, t.HVRelDiff)
	}
}

// float32Tol is analyze's default eigen tolerance in float32: a float32
// HVP is exact to about 2·10⁻⁷‖H‖, so residuals stall near there and the
// float64 default (10⁻⁸) would spend the whole --max-hvps budget.
const float32Tol = 1e-6

// precisionFlags reads --precision for analyze: with float32 and no
// explicit --tol, *tol becomes float32Tol. float32 is not offered over MPI.
func precisionFlags(fs *flag.FlagSet, precision string, tol *float64, distributed bool) (snapshot.Precision, error) {
	prec, err := hessian.ParsePrecision(precision)
	if err != nil {
		return "", usageErr("--precision: %v", err)
	}
	if prec != snapshot.Float32 {
		return prec, nil
	}
	if distributed {
		return "", usageErr("--precision float32 is not supported with --distributed; use --precision float64")
	}
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "tol" })
	if !set {
		*tol = float32Tol
	}
	return prec, nil
}

// probePrecision reads train's --precision and refuses float32 up front
// for a model it does not cover, rather than failing every probe.
func probePrecision(precision string, net *trainer.Network) (snapshot.Precision, error) {
	prec, err := hessian.ParsePrecision(precision)
	if err != nil {
		return "", usageErr("--precision: %v", err)
	}
	if prec == snapshot.Float32 {
		if err := trainer.SupportsFloat32(net); err != nil {
			return "", usageErr("--precision float32: %v", err)
		}
	}
	return prec, nil
}
