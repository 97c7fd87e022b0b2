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

	"github.com/hessmon/hessmon/data"
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
	Precision    string           `json:"precision,omitempty"` // set for float32 only: float64 output is unchanged
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

// analyzeOpts are the parsed flags of `hessmon analyze`.
type analyzeOpts struct {
	model                                 modelFlags
	weights, order, bnMode, plot          string
	precision                             string
	batch, top, maxHVPs, traceMax         int
	esdProbes, esdSteps                   int
	tol, traceTol                         float64
	trainSteps                            int64
	trace, esd, power, json, blocks, dist bool
	groups                                []estimators.GroupRule
	prec                                  snapshot.Precision
}

func runAnalyze(ctx context.Context, e *env, args []string) error {
	o, err := parseAnalyze(e, args)
	if err != nil {
		return err
	}
	ord, err := estimators.ParseOrder(o.order)
	if err != nil {
		return usageErr("--order: %v", err)
	}
	mode, err := parseBNMode(o.bnMode)
	if err != nil {
		return err
	}
	net, head, err := analyzeModel(ctx, o)
	if err != nil {
		return err
	}
	op, rank, ranks, done, err := analyzeOperator(ctx, o, net, head, mode)
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	res := analyzeResult{Model: net.String(), Params: net.Dim(), Batch: o.batch, Converged: true}
	if ranks > 1 {
		res.Ranks = ranks
	}
	if o.prec == snapshot.Float32 {
		res.Precision = string(o.prec)
	}
	if l, ok := op.(interface{ Loss() float64 }); ok {
		res.Loss = l.Loss()
	}
	sn, err := analyzeSnapshot(ctx, &res, o, ord, op, net)
	if err != nil {
		return err
	}
	res.Seconds = time.Since(start).Seconds()
	if rank != 0 {
		return nil // only rank 0 reports
	}
	if o.plot != "" && sn.ESD != nil {
		sn.Run = net.String()
		if err := saveESDPlot(o.plot, sn); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	if o.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printAnalysis(e.stdout, res, o.traceTol)
	return nil
}

// parseAnalyze parses and checks analyze's flags.
func parseAnalyze(e *env, args []string) (analyzeOpts, error) {
	fs := newFlags(e, "analyze", "a one-shot, PyHessian-style analysis of one model on a fixed batch — the first --batch images of the "+
		"MNIST training file, pixels in [0,1], mean cross-entropy: top-k eigenvalues with residual certificates (Krylov–Schur, or "+
		"PyHessian's power iteration with --power), the trace with its standard error and per-layer block traces, and the spectral "+
		"density by stochastic Lanczos quadrature. Without --weights it first trains --train-steps SGD steps from a seeded init.",
		"hessmon analyze --model mlp --hidden 128,128 --act tanh --batch 1000 --top 5 --trace --esd --json")
	var o analyzeOpts
	registerAnalyzeModelFlags(fs, &o.model)
	fs.StringVar(&o.weights, "weights", "", "load parameters from a .safetensors file (PyTorch state_dict names and shapes)")
	fs.IntVar(&o.batch, "batch", 1000, "analyse the first B training images")
	fs.IntVar(&o.top, "top", 5, "top-k eigenvalues (0: none)")
	fs.StringVar(&o.order, "order", "algebraic", "eigenvalue order: algebraic or magnitude")
	fs.BoolVar(&o.trace, "trace", true, "estimate the trace")
	fs.BoolVar(&o.esd, "esd", true, "estimate the spectral density")
	fs.Float64Var(&o.tol, "tol", 1e-8, "eigen residual tolerance relative to ‖H‖")
	fs.Float64Var(&o.traceTol, "trace-tol", 0.01, "target relative standard error of the trace")
	fs.IntVar(&o.maxHVPs, "max-hvps", 2000, "HVP budget of each estimator")
	fs.IntVar(&o.traceMax, "trace-max-hvps", 150, "cap on the trace's HVPs (at most --max-hvps): past it the trace reports the standard error it "+
		"reached instead of --trace-tol; the defaults at 118k stop at 1% after 143; at 670k the trace deflated by the ESD's 100-vector basis costs about an HVP per probe in GEMMs, and 300 took 162 s on the loaded 2-core machine")
	fs.IntVar(&o.esdProbes, "esd-probes", 1, "SLQ probe vectors n_v")
	fs.IntVar(&o.esdSteps, "esd-steps", 100, "SLQ Lanczos steps m")
	fs.BoolVar(&o.power, "power", false, "use PyHessian's power iteration (tol 1e-3, 100 iterations) instead of Krylov–Schur, for comparison")
	fs.Int64Var(&o.trainSteps, "train-steps", 200, "without --weights: SGD steps (batch 64, η 0.05, momentum 0.9) before the analysis")
	fs.StringVar(&o.bnMode, "bn-mode", "eval", "BatchNorm in the Hessian: eval (running statistics, as PyHessian) or train")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	fs.StringVar(&o.plot, "plot", "", "write the ESD plot (log density, as PyHessian's density_plot) to this PNG")
	fs.BoolVar(&o.blocks, "blocks", false, "also λ1 of each parameter block's diagonal Hessian block H_bb (layer-wise sharpness, "+
		"algebraic order, --tol and --max-hvps per block; each product costs one full HVP)")
	fs.Func("block-group", "with --blocks: merge the blocks whose name matches a regexp into one, as name=regexp (repeatable; "+
		"e.g. weights=\\.weight$); unmatched blocks stay on their own", func(s string) error {
		r, err := estimators.ParseGroupRule(s)
		if err == nil {
			o.groups = append(o.groups, r)
		}
		return err
	})
	fs.BoolVar(&o.dist, "distributed", false, "shard the batch over MPI ranks (needs a binary built with -tags mpi, run under mpirun)")
	fs.StringVar(&o.precision, "precision", "float64", "HVP precision: float64, or float32 (MLPs; the estimators stay float64; --tol defaults to 1e-6, float32's floor)")
	if err := parse(fs, args); err != nil {
		return o, err
	}
	var err error
	if o.prec, err = precisionFlags(fs, o.precision, &o.tol, o.dist); err != nil {
		return o, err
	}
	if o.batch <= 0 || o.top < 0 || o.maxHVPs <= 0 || o.traceMax <= 0 || o.esdProbes <= 0 || o.esdSteps <= 0 || o.trainSteps < 0 {
		return o, usageErr("--batch, --max-hvps, --trace-max-hvps, --esd-probes and --esd-steps must be positive; --top and --train-steps non-negative")
	}
	return o, nil
}

// analyzeModel builds the model, loads or trains its weights, and returns
// it with the analysed batch.
func analyzeModel(ctx context.Context, o analyzeOpts) (*trainer.Network, *data.Dataset, error) {
	net, train, _, err := o.model.setup()
	if err != nil {
		return nil, nil, err
	}
	if o.weights != "" {
		if err := trainer.LoadSafetensors(net, o.weights); err != nil {
			return nil, nil, err
		}
	} else if o.trainSteps > 0 {
		if _, err := trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
			Data: train, BatchSize: 64, Steps: o.trainSteps, Seed: o.model.seed}); err != nil {
			return nil, nil, fmt.Errorf("training before the analysis: %w", err)
		}
	}
	if o.batch > train.Len() {
		return nil, nil, usageErr("--batch %d: the data set has %d samples", o.batch, train.Len())
	}
	head, err := train.Subset(0, o.batch)
	if err != nil {
		return nil, nil, err
	}
	return net, head, nil
}

// analyzeOperator is the Hessian of the batch: sharded over the ranks with
// --distributed, chunked in this process otherwise. done releases it.
func analyzeOperator(ctx context.Context, o analyzeOpts, net *trainer.Network, head *data.Dataset, mode trainer.Mode) (op hvp.Operator, rank, ranks int, done func(), err error) {
	if o.dist {
		s, err := openSharded(ctx, net, head, mode, analyzeChunk)
		if err != nil {
			return nil, 0, 0, nil, err
		}
		return s.op, s.comm.Rank(), s.comm.Size(), s.close, nil
	}
	op, err = hessian.NewOperator(net, trainer.HeadBatch(head, 0), trainer.CrossEntropy{}, mode, hessian.Options{Precision: o.prec, MaxChunk: analyzeChunk})
	if m, ok := op.(interface{ SetWorkers(int) }); ok {
		m.SetWorkers(2)
	}
	if err != nil {
		return nil, 0, 0, nil, err
	}
	return op, 0, 1, func() {}, nil
}

// analyzeSnapshot runs the analysis pipeline (and --blocks) and fills res.
func analyzeSnapshot(ctx context.Context, res *analyzeResult, o analyzeOpts, ord estimators.Order, op hvp.Operator, net *trainer.Network) (snapshot.Snapshot, error) {
	relTol := o.traceTol
	if relTol <= 0 {
		relTol = math.SmallestNonzeroFloat64 // no early stop: spend --max-hvps
	}
	cfg := monitor.Config{
		NoEigen: o.top == 0, TopK: o.top, Order: ord, EigenTol: o.tol, EigenMaxHVPs: o.maxHVPs, Power: o.power,
		NoTrace: !o.trace, TraceRelTol: relTol, TraceMaxHVPs: min(o.traceMax, o.maxHVPs),
		NoESD: !o.esd, ESDProbes: o.esdProbes, ESDSteps: o.esdSteps,
		Seed: o.model.seed,
	}
	cfg.MaxHVPs = monitor.BudgetFor(cfg, net.Dim()) // each estimator gets --max-hvps
	var sn snapshot.Snapshot
	_, cost, err := monitor.Analyze(ctx, &sn, op, cfg, monitor.Inputs{Blocks: hessian.Blocks(net)})
	if err != nil && !errors.Is(err, estimators.ErrNotConverged) {
		return sn, fmt.Errorf("analysis: %w", err)
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
	if !o.blocks {
		return sn, nil
	}
	groups := estimators.GroupBlocks(hessian.Blocks(net), o.groups)
	be, _, err := estimators.BlockEigen(ctx, op, groups, estimators.EigenOptions{Tol: o.tol, MaxHVPs: o.maxHVPs, Seed: o.model.seed + 7}, nil)
	if err != nil {
		return sn, fmt.Errorf("block λ1: %w", err)
	}
	for _, b := range be {
		res.BlockLambda1 = append(res.BlockLambda1, blockEigenJSON{Name: b.Name, Dim: b.Dim, Value: b.Value, Residual: b.Residual, HVPs: b.HVPs, Converged: b.Converged})
		res.HVPs.Blocks += b.HVPs
	}
	return sn, nil
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
