package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/internal/analysis"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

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
	res := analysis.Result{Model: net.String(), Params: net.Dim(), Batch: o.batch, Converged: true}
	if ranks > 1 {
		res.Ranks = ranks
	}
	if o.prec == snapshot.Float32 {
		res.Precision = string(o.prec)
	}
	if l, ok := op.(interface{ Loss() float64 }); ok {
		res.Loss = l.Loss()
	}
	sn, err := analysis.Run(ctx, &res, analysis.Options{Order: ord, Top: o.top, MaxHVPs: o.maxHVPs, TraceMax: o.traceMax,
		ESDProbes: o.esdProbes, ESDSteps: o.esdSteps, Tol: o.tol, TraceTol: o.traceTol, Trace: o.trace, ESD: o.esd, Power: o.power,
		Blocks: o.blocks, Groups: o.groups, Seed: o.model.seed}, op, net)
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
	return res.WriteText(e.stdout, o.traceTol)
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
