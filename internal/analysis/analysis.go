// Package analysis is the pipeline of `hessmon analyze`: the monitor's
// estimators on one Hessian, with the block λ1s, and its report.
package analysis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// Result is the JSON of `hessmon analyze`.
type Result struct {
	Model       string             `json:"model"`
	Params      int                `json:"params"`
	Batch       int                `json:"batch"`
	Loss        float64            `json:"loss"`
	Eigenvalues []float64          `json:"eigenvalues"`
	Residuals   []float64          `json:"residuals"`
	Converged   bool               `json:"eigen_converged"`
	Trace       *float64           `json:"trace"`
	TraceStdErr *float64           `json:"trace_stderr"`
	TraceProbes int                `json:"trace_probes"`
	TraceMethod string             `json:"trace_method,omitempty"`
	BlockTraces map[string]float64 `json:"block_traces,omitempty"`
	ESD         *ESD               `json:"esd,omitempty"`
	// BlockLambda1 is λ1 of each diagonal block H_bb (--blocks).
	BlockLambda1 []BlockEigen `json:"block_lambda1,omitempty"`
	HVPs         HVPCounts    `json:"hvps"`
	Seconds      float64      `json:"seconds"`
	Ranks        int          `json:"ranks,omitempty"`
	Precision    string       `json:"precision,omitempty"` // set for float32 only: float64 output is unchanged
}

// ESD is the spectral density's quadrature.
type ESD struct {
	Nodes   []float64 `json:"nodes"`
	Weights []float64 `json:"weights"`
	Probes  int       `json:"probes"`
	Steps   int       `json:"steps"`
}

// HVPCounts are the HVPs of each estimator.
type HVPCounts struct {
	Eigen  int `json:"eigen"`
	Trace  int `json:"trace"`
	ESD    int `json:"esd"`
	Blocks int `json:"blocks,omitempty"` // full HVPs of all block λ1 solves
}

// BlockEigen is one block's λ1 with its residual certificate and cost
// in full HVPs.
type BlockEigen struct {
	Name      string  `json:"name"`
	Dim       int     `json:"dim"`
	Value     float64 `json:"value"`
	Residual  float64 `json:"residual"`
	HVPs      int     `json:"hvps"`
	Converged bool    `json:"converged"`
}

// Options configure Run: analyze's flags.
type Options struct {
	Order                  estimators.Order
	Top, MaxHVPs, TraceMax int
	ESDProbes, ESDSteps    int
	Tol, TraceTol          float64
	Trace, ESD, Power      bool
	// Blocks asks for λ1 of each parameter block, grouped by Groups.
	Blocks bool
	Groups []estimators.GroupRule
	Seed   uint64
}

// Run runs the analysis pipeline (and the block λ1s) on op, the Hessian
// of net's loss, and fills res.
func Run(ctx context.Context, res *Result, o Options, op hvp.Operator, net *trainer.Network) (snapshot.Snapshot, error) {
	relTol := o.TraceTol
	if relTol <= 0 {
		relTol = math.SmallestNonzeroFloat64 // no early stop: spend --max-hvps
	}
	cfg := monitor.Config{
		NoEigen: o.Top == 0, TopK: o.Top, Order: o.Order, EigenTol: o.Tol, EigenMaxHVPs: o.MaxHVPs, Power: o.Power,
		NoTrace: !o.Trace, TraceRelTol: relTol, TraceMaxHVPs: min(o.TraceMax, o.MaxHVPs),
		NoESD: !o.ESD, ESDProbes: o.ESDProbes, ESDSteps: o.ESDSteps,
		Seed: o.Seed,
	}
	cfg.MaxHVPs = monitor.BudgetFor(cfg, net.Dim()) // each estimator gets --max-hvps
	var sn snapshot.Snapshot
	_, cost, err := monitor.Analyze(ctx, &sn, op, cfg, monitor.Inputs{Blocks: hessian.Blocks(net)})
	if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
		return sn, fmt.Errorf("analysis: %w", err)
	}
	res.Converged = err == nil
	res.Eigenvalues, res.Residuals = sn.Eigenvalues, sn.Residuals
	res.HVPs = HVPCounts{Eigen: cost.Eigen, Trace: cost.Trace, ESD: cost.ESD}
	if tr := sn.Trace; tr != nil {
		res.Trace, res.TraceStdErr = &tr.Value, &tr.StdErr
		res.TraceProbes, res.TraceMethod = tr.Probes, tr.Method
		res.BlockTraces = map[string]float64{}
		for _, b := range tr.Blocks {
			res.BlockTraces[b.Name] = b.Value
		}
	}
	if e := sn.ESD; e != nil {
		res.ESD = &ESD{Nodes: e.Nodes, Weights: e.Weights, Probes: e.Probes, Steps: e.Steps}
	}
	if !o.Blocks {
		return sn, nil
	}
	groups := estimators.GroupBlocks(hessian.Blocks(net), o.Groups)
	be, _, err := estimators.BlockEigen(ctx, op, groups, estimators.EigenOptions{Tol: o.Tol, MaxHVPs: o.MaxHVPs, Seed: o.Seed + 7}, nil)
	if err != nil {
		return sn, fmt.Errorf("block λ1: %w", err)
	}
	for _, b := range be {
		res.BlockLambda1 = append(res.BlockLambda1, BlockEigen{Name: b.Name, Dim: b.Dim, Value: b.Value, Residual: b.Residual, HVPs: b.HVPs, Converged: b.Converged})
		res.HVPs.Blocks += b.HVPs
	}
	return sn, nil
}

// WriteText prints r as `hessmon analyze` does without --json; traceTol is
// the trace's target relative stderr (--trace-tol).
func (r Result) WriteText(w io.Writer, traceTol float64) error {
	ew := &errWriter{w: w}
	ew.printf("%s, %d params, batch %d, loss %.5f\n", r.Model, r.Params, r.Batch, r.Loss)
	for i, v := range r.Eigenvalues {
		ew.printf("  λ%-2d = %14.8g   residual ‖Hv−λv‖ = %.2e\n", i+1, v, r.Residuals[i])
	}
	if !r.Converged {
		ew.printf("%s\n", "  (eigen solve stopped at the HVP budget; residuals show how far each pair is)")
	}
	if r.Trace != nil {
		ew.printf("  trace = %.6g ± %.2g (stderr, %d probes, %s)\n", *r.Trace, *r.TraceStdErr, r.TraceProbes, r.TraceMethod)
		if rel := *r.TraceStdErr / math.Abs(*r.Trace); traceTol > 0 && rel > traceTol {
			ew.printf("  (trace stopped at its HVP cap with relative stderr %.2g, target %.2g; raise --trace-max-hvps for more)\n", rel, traceTol)
		}
	}
	if r.ESD != nil {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range r.ESD.Nodes {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		ew.printf("  ESD: %d probe(s) × %d Lanczos steps, nodes in [%.4g, %.4g]\n", r.ESD.Probes, r.ESD.Steps, lo, hi)
	}
	if len(r.BlockLambda1) > 0 {
		ew.printf("%s\n", "  λ1 per block (diagonal block H_bb; ≤ λ1 by interlacing):")
		for _, b := range r.BlockLambda1 {
			note := ""
			if !b.Converged {
				note = "  (HVP budget reached)"
			}
			ew.printf("    %-24s dim %8d  λ1 = %14.8g   residual %.2e   %d HVPs%s\n", b.Name, b.Dim, b.Value, b.Residual, b.HVPs, note)
		}
	}
	ew.printf("  HVPs: eigen %d, trace %d, ESD %d", r.HVPs.Eigen, r.HVPs.Trace, r.HVPs.ESD)
	if len(r.BlockLambda1) > 0 {
		ew.printf(", blocks %d", r.HVPs.Blocks)
	}
	ew.printf("; %.2fs\n", r.Seconds)
	return ew.err
}

// errWriter keeps the first write error so that a report prints in
// straight lines and reports it once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
