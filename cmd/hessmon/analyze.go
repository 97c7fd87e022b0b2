package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// analyzeResult is the JSON of `hessmon analyze`.
type analyzeResult struct {
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
	ESD         *esdJSON           `json:"esd,omitempty"`
	// BlockLambda1 is λ1 of each diagonal block H_bb (--blocks).
	BlockLambda1 []blockEigenJSON `json:"block_lambda1,omitempty"`
	HVPs         hvpCounts        `json:"hvps"`
	Seconds      float64          `json:"seconds"`
	Ranks        int              `json:"ranks,omitempty"`
}

type esdJSON struct {
	Nodes   []float64 `json:"nodes"`
	Weights []float64 `json:"weights"`
	Probes  int       `json:"probes"`
	Steps   int       `json:"steps"`
}

type hvpCounts struct {
	Eigen  int `json:"eigen"`
	Trace  int `json:"trace"`
	ESD    int `json:"esd"`
	Blocks int `json:"blocks,omitempty"` // full HVPs of all block λ1 solves
}

// blockEigenJSON is one block's λ1 with its residual certificate and cost
// in full HVPs.
type blockEigenJSON struct {
	Name      string  `json:"name"`
	Dim       int     `json:"dim"`
	Value     float64 `json:"value"`
	Residual  float64 `json:"residual"`
	HVPs      int     `json:"hvps"`
	Converged bool    `json:"converged"`
}

// analyzeChunk bounds the samples per forward pass: larger batches are
// split and averaged (hessian.NewExactBatches), which bounds memory and uses
// both cores.
const analyzeChunk = 2000

func runAnalyze(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "analyze", "a one-shot, PyHessian-style analysis of one model on a fixed batch — the first --batch images of the "+
		"MNIST training file, pixels in [0,1], mean cross-entropy: top-k eigenvalues with residual certificates (Krylov–Schur, or "+
		"PyHessian's power iteration with --power), the trace with its standard error and per-layer block traces, and the spectral "+
		"density by stochastic Lanczos quadrature. Without --weights it first trains --train-steps SGD steps from a seeded init.",
		"hessmon analyze --model mlp --hidden 128,128 --act tanh --batch 1000 --top 5 --trace --esd --json")
	var mf modelFlags
	registerAnalyzeModelFlags(fs, &mf)
	weights := fs.String("weights", "", "load parameters from a .safetensors file (PyTorch state_dict names and shapes)")
	batch := fs.Int("batch", 1000, "analyse the first B training images")
	top := fs.Int("top", 5, "top-k eigenvalues (0: none)")
	order := fs.String("order", "algebraic", "eigenvalue order: algebraic or magnitude")
	doTrace := fs.Bool("trace", true, "estimate the trace")
	doESD := fs.Bool("esd", true, "estimate the spectral density")
	tol := fs.Float64("tol", 1e-8, "eigen residual tolerance relative to ‖H‖")
	traceTol := fs.Float64("trace-tol", 0.01, "target relative standard error of the trace")
	maxHVPs := fs.Int("max-hvps", 2000, "HVP budget of each estimator")
	traceMax := fs.Int("trace-max-hvps", 150, "cap on the trace's HVPs (at most --max-hvps): past it the trace reports the standard error it "+
		"reached instead of --trace-tol; the defaults at 118k stop at 1% after 143; at 670k the trace deflated by the ESD's 100-vector basis costs about an HVP per probe in GEMMs, and 300 took 162 s on the loaded 2-core machine")
	esdProbes := fs.Int("esd-probes", 1, "SLQ probe vectors n_v")
	esdSteps := fs.Int("esd-steps", 100, "SLQ Lanczos steps m")
	power := fs.Bool("power", false, "use PyHessian's power iteration (tol 1e-3, 100 iterations) instead of Krylov–Schur, for comparison")
	trainSteps := fs.Int64("train-steps", 200, "without --weights: SGD steps (batch 64, η 0.05, momentum 0.9) before the analysis")
	bnMode := fs.String("bn-mode", "eval", "BatchNorm in the Hessian: eval (running statistics, as PyHessian) or train")
	asJSON := fs.Bool("json", false, "print JSON")
	plotPath := fs.String("plot", "", "write the ESD plot (log density, as PyHessian's density_plot) to this PNG")
	doBlocks := fs.Bool("blocks", false, "also λ1 of each parameter block's diagonal Hessian block H_bb (layer-wise sharpness, "+
		"algebraic order, --tol and --max-hvps per block; each product costs one full HVP)")
	var groupRules []estimators.GroupRule
	fs.Func("block-group", "with --blocks: merge the blocks whose name matches a regexp into one, as name=regexp (repeatable; "+
		"e.g. weights=\\.weight$); unmatched blocks stay on their own", func(s string) error {
		r, err := estimators.ParseGroupRule(s)
		if err == nil {
			groupRules = append(groupRules, r)
		}
		return err
	})
	distributed := fs.Bool("distributed", false, "shard the batch over MPI ranks (needs a binary built with -tags mpi, run under mpirun)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *batch <= 0 || *top < 0 || *maxHVPs <= 0 || *traceMax <= 0 || *esdProbes <= 0 || *esdSteps <= 0 || *trainSteps < 0 {
		return usageErr("--batch, --max-hvps, --esd-probes and --esd-steps must be positive; --top and --train-steps non-negative")
	}
	ord, err := estimators.ParseOrder(*order)
	if err != nil {
		return usageErr("--order: %v", err)
	}
	mode, err := parseBNMode(*bnMode)
	if err != nil {
		return err
	}
	net, train, _, err := mf.setup()
	if err != nil {
		return err
	}
	if *weights != "" {
		if err := trainer.LoadSafetensors(net, *weights); err != nil {
			return err
		}
	} else if *trainSteps > 0 {
		if _, err := trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
			Data: train, BatchSize: 64, Steps: *trainSteps, Seed: mf.seed}); err != nil {
			return fmt.Errorf("training before the analysis: %w", err)
		}
	}
	if *batch > train.Len() {
		return usageErr("--batch %d: the data set has %d samples", *batch, train.Len())
	}
	head, err := train.Subset(0, *batch)
	if err != nil {
		return err
	}

	var op hvp.Operator
	rank, ranks := 0, 1
	if *distributed {
		dop, r, size, closeComm, err := distributedOperator(ctx, net, head, mode, analyzeChunk)
		if err != nil {
			return err
		}
		defer closeComm()
		op, rank, ranks = dop, r, size
	} else {
		op, err = hessian.NewChunked(net, head.Head(0), trainer.CrossEntropy{}, mode, analyzeChunk)
		if m, ok := op.(interface{ SetWorkers(int) }); ok {
			m.SetWorkers(2)
		}
		if err != nil {
			return err
		}
	}
	start := time.Now()
	res := analyzeResult{Model: net.String(), Params: net.Dim(), Batch: *batch, Converged: true}
	if ranks > 1 {
		res.Ranks = ranks
	}
	if l, ok := op.(interface{ Loss() float64 }); ok {
		res.Loss = l.Loss()
	}
	relTol := *traceTol
	if relTol <= 0 {
		relTol = math.SmallestNonzeroFloat64 // no early stop: spend --max-hvps
	}
	esdCost := 0
	if *doESD {
		esdCost = *esdProbes * min(*esdSteps, net.Dim())
	}
	cfg := monitor.Config{
		NoEigen: *top == 0, TopK: *top, Order: ord, EigenTol: *tol, EigenMaxHVPs: *maxHVPs, Power: *power,
		NoTrace: !*doTrace, TraceRelTol: relTol, TraceMaxHVPs: min(*traceMax, *maxHVPs),
		NoESD: !*doESD, ESDProbes: *esdProbes, ESDSteps: *esdSteps,
		MaxHVPs: 2*(*maxHVPs) + esdCost + 10, // each estimator gets --max-hvps
		Seed:    mf.seed,
	}
	var sn snapshot.Snapshot
	_, cost, err := monitor.Analyze(ctx, &sn, op, cfg, monitor.Inputs{Blocks: hessian.Blocks(net)})
	if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
		return fmt.Errorf("analysis: %w", err)
	}
	res.Converged = err == nil
	res.Eigenvalues, res.Residuals = sn.Eigenvalues, sn.Residuals
	res.HVPs = hvpCounts{Eigen: cost.Eigen, Trace: cost.Trace, ESD: cost.ESD}
	if tr := sn.Trace; tr != nil {
		res.Trace, res.TraceStdErr = &tr.Value, &tr.StdErr
		res.TraceProbes, res.TraceMethod = tr.Probes, tr.Method
		res.BlockTraces = map[string]float64{}
		for _, b := range tr.Blocks {
			res.BlockTraces[b.Name] = b.Value
		}
	}
	if e := sn.ESD; e != nil {
		res.ESD = &esdJSON{Nodes: e.Nodes, Weights: e.Weights, Probes: e.Probes, Steps: e.Steps}
	}
	if *doBlocks {
		groups := estimators.GroupBlocks(hessian.Blocks(net), groupRules)
		be, _, err := estimators.BlockEigen(ctx, op, groups, estimators.EigenOptions{Tol: *tol, MaxHVPs: *maxHVPs, Seed: mf.seed + 7}, nil)
		if err != nil {
			return fmt.Errorf("block λ1: %w", err)
		}
		for _, b := range be {
			res.BlockLambda1 = append(res.BlockLambda1, blockEigenJSON{Name: b.Name, Dim: b.Dim, Value: b.Value, Residual: b.Residual, HVPs: b.HVPs, Converged: b.Converged})
			res.HVPs.Blocks += b.HVPs
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if rank != 0 {
		return nil // only rank 0 reports
	}
	if *plotPath != "" && sn.ESD != nil {
		sn.Run = net.String()
		if err := saveESDPlot(*plotPath, sn); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printAnalysis(e.stdout, res, *traceTol)
	return nil
}

// registerAnalyzeModelFlags registers the model flags with resnet's
// --blocks renamed --resnet-blocks, because in analyze --blocks asks for
// λ1 per parameter block.
func registerAnalyzeModelFlags(fs *flag.FlagSet, mf *modelFlags) {
	tmp := flag.NewFlagSet("model", flag.ContinueOnError)
	mf.register(tmp, "128,128", "tanh")
	tmp.VisitAll(func(f *flag.Flag) {
		name := f.Name
		if name == "blocks" {
			name = "resnet-blocks"
		}
		fs.Var(f.Value, name, f.Usage)
	})
}

func printAnalysis(w io.Writer, r analyzeResult, traceTol float64) {
	fmt.Fprintf(w, "%s, %d params, batch %d, loss %.5f\n", r.Model, r.Params, r.Batch, r.Loss)
	for i, v := range r.Eigenvalues {
		fmt.Fprintf(w, "  λ%-2d = %14.8g   residual ‖Hv−λv‖ = %.2e\n", i+1, v, r.Residuals[i])
	}
	if !r.Converged {
		fmt.Fprintln(w, "  (eigen solve stopped at the HVP budget; residuals show how far each pair is)")
	}
	if r.Trace != nil {
		fmt.Fprintf(w, "  trace = %.6g ± %.2g (stderr, %d probes, %s)\n", *r.Trace, *r.TraceStdErr, r.TraceProbes, r.TraceMethod)
		if rel := *r.TraceStdErr / math.Abs(*r.Trace); traceTol > 0 && rel > traceTol {
			fmt.Fprintf(w, "  (trace stopped at its HVP cap with relative stderr %.2g, target %.2g; raise --trace-max-hvps for more)\n", rel, traceTol)
		}
	}
	if r.ESD != nil {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, x := range r.ESD.Nodes {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		fmt.Fprintf(w, "  ESD: %d probe(s) × %d Lanczos steps, nodes in [%.4g, %.4g]\n", r.ESD.Probes, r.ESD.Steps, lo, hi)
	}
	if len(r.BlockLambda1) > 0 {
		fmt.Fprintln(w, "  λ1 per block (diagonal block H_bb; ≤ λ1 by interlacing):")
		for _, b := range r.BlockLambda1 {
			note := ""
			if !b.Converged {
				note = "  (HVP budget reached)"
			}
			fmt.Fprintf(w, "    %-24s dim %8d  λ1 = %14.8g   residual %.2e   %d HVPs%s\n", b.Name, b.Dim, b.Value, b.Residual, b.HVPs, note)
		}
	}
	fmt.Fprintf(w, "  HVPs: eigen %d, trace %d, ESD %d", r.HVPs.Eigen, r.HVPs.Trace, r.HVPs.ESD)
	if len(r.BlockLambda1) > 0 {
		fmt.Fprintf(w, ", blocks %d", r.HVPs.Blocks)
	}
	fmt.Fprintf(w, "; %.2fs\n", r.Seconds)
}
