package bench

import (
	"context"
	"fmt"
	"time"

	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// Precision is bench hvp's float32 section: float32 and float64 HVPs on
// the same weights, batch and v, timed alternately in one loop so that the
// machine's load falls on both alike.
type Precision struct {
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
	Torch *Torch `json:"torch,omitempty"`
}

// hvp32 times float32 against float64 HVPs on o.Batch and on o.ProbeBatch,
// interleaved rep by rep, and with o.Torch torch's float32 HVP; hv64 is
// hessmon's float64 H·v, the script's reference.
func hvp32(ctx context.Context, o HVPOptions, v, hv64 []float64) (*Precision, error) {
	loss := trainer.CrossEntropy{}
	ops := make([]hvp.Operator, 4) // float64 b, float32 b, float64 pb, float32 pb
	for i := range ops {
		bt, prec := o.Batch, snapshot.Float64
		if i >= 2 {
			bt = o.ProbeBatch
		}
		if i%2 == 1 {
			prec = snapshot.Float32
		}
		op, err := hessian.NewOperator(o.Net, bt, loss, trainer.ModeEval, hessian.Options{Precision: prec})
		if err != nil {
			return nil, fmt.Errorf("bench hvp --precision float32: %w", err)
		}
		ops[i] = op
	}
	n := o.Net.Dim()
	hv := [][]float64{make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)}
	times := make([][]float64, 4)
	for r := -2; r < o.Reps; r++ {
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
	res := &Precision{Precision: snapshot.Float32, Float64Seconds: median(times[0]), HVPSeconds: median(times[1])}
	res.Ratio = res.HVPSeconds / res.Float64Seconds
	res.HVRelDiff = floats.Distance(hv[1], hv[0], 2) / floats.Norm(hv[0], 2)
	res.Probe.Batch, res.Probe.Float64Seconds, res.Probe.HVPSeconds = o.ProbeBatch.Len(), median(times[2]), median(times[3])
	res.Probe.Ratio = res.Probe.HVPSeconds / res.Probe.Float64Seconds
	if o.Torch != nil {
		t, err := runTorch(ctx, *o.Torch, "float32", o.Net, o.Batch, v, hv64, o.Reps)
		if err != nil {
			return nil, err
		}
		t.HVPRatio = res.HVPSeconds / t.HVPSeconds
		res.Torch = t
	}
	return res, nil
}

// writeText is the text form of the float32 section.
func (p *Precision) writeText(w *errWriter, batch int) {
	w.printf("  float32 HVP, batch %-4d %6.2f ms   float64 %.2f ms in the same loop: %.2f×   |Hv₃₂ − Hv₆₄|/|Hv₆₄| = %.1e\n",
		batch, p.HVPSeconds*1e3, p.Float64Seconds*1e3, p.Ratio, p.HVRelDiff)
	w.printf("  float32 probe HVP, batch %-3d %6.2f ms   float64 %.2f ms: %.2f×\n",
		p.Probe.Batch, p.Probe.HVPSeconds*1e3, p.Probe.Float64Seconds*1e3, p.Probe.Ratio)
	if t := p.Torch; t != nil {
		w.printf("  torch %s float32 (%d threads): retained graph %.2f ms, hessmon float32 %.2f× it; |Hv_torch32 − Hv₆₄|/|Hv₆₄| = %.1e\n",
			t.Version, t.Threads, t.HVPSeconds*1e3, t.HVPRatio, t.HVRelDiff)
	}
}

// Median is the median of xs (xs is not modified).
func Median(xs []float64) float64 { return median(xs) }
