package monitor

import (
	"context"
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor/snapshot"
)

// Snapshot is the value every probe produces (see package snapshot).
type Snapshot = snapshot.Snapshot

// Cost is what one Analyze spent, by estimate.
type Cost struct {
	Eigen, Trace, ESD int
}

// Total is the sum of the parts.
func (c Cost) Total() int { return c.Eigen + c.Trace + c.ESD }

// ErrBudget reports a probe that ran out of its HVP budget (Config.MaxHVPs).
var ErrBudget = errors.New("monitor: HVP budget exhausted")

// Analyze is hessmon's one analysis pipeline: it turns an operator into the
// estimates of a Snapshot (top-k eigenpairs with residuals, trace ± stderr
// with per-block traces, ESD), each warm-started from warm (nil: cold), and
// returns the warm state for the next call. The monitor runs it at every
// probe and `hessmon analyze` once; both therefore report the same thing
// for the same operator and Config.
//
// Analyze writes only the estimate fields of dst (Eigenvalues, Residuals,
// Eigenvectors with KeepVectors, Trace, ESD, Warm). blocks partition the
// parameter vector for per-block traces (nil: none). With cold set the
// eigen solve ignores its warm state: a warm solve only sees directions the
// old eigenvectors or the change of H lead to, so an eigenvalue rising from
// elsewhere is caught by a periodic cold solve.
//
// The ESD's Lanczos steps are reserved from the budget first, the eigen
// solve gets what it needs, the trace the rest up to Config.TraceMaxHVPs;
// the eigen solve's H·v products deflate the trace at no extra HVPs. An
// eigen solve that stops at its budget (estimators.ErrNotConverged) still
// lets the trace and ESD run; the error is returned at the end with every
// estimate reached filled in. Analyze does not recover panics or check for
// NaN: the monitor's probe does that around it.
func Analyze(ctx context.Context, dst *snapshot.Snapshot, op hvp.Operator, cfg Config, blocks []estimators.Block, warm *estimators.Warm, cold bool) (*estimators.Warm, Cost, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, Cost{}, err
	}
	if warm == nil {
		warm = new(estimators.Warm)
	}
	next := new(estimators.Warm)
	var cost Cost
	budget := cfg.MaxHVPs
	esdCost := 0
	if !cfg.NoESD {
		esdCost = cfg.ESDProbes * min(cfg.ESDSteps, op.Dim())
	}
	var eigenErr error
	var vectors, products [][]float64
	if !cfg.NoEigen {
		k := min(cfg.TopK, op.Dim())
		limit := max(1, budget-esdCost-10)
		if cfg.EigenMaxHVPs > 0 {
			limit = min(limit, cfg.EigenMaxHVPs)
		}
		var res estimators.EigenResult
		var w *estimators.EigenWarm
		var err error
		if cfg.Power {
			res, err = estimators.PowerIteration(ctx, op, estimators.PowerOptions{K: k, Seed: cfg.Seed, KeepVectors: true})
		} else {
			eigenWarm := warm.Eigen
			if cold {
				eigenWarm = nil
			}
			res, w, err = estimators.TopEigen(ctx, op, estimators.EigenOptions{
				K: k, Order: cfg.Order, Tol: cfg.EigenTol, MaxHVPs: limit,
				Seed: cfg.Seed, KeepVectors: true, KeepProducts: true,
			}, eigenWarm)
		}
		cost.Eigen = res.HVPs
		budget -= res.HVPs
		dst.Warm = res.Warm
		dst.Eigenvalues, dst.Residuals = res.Values, res.Residuals
		if cfg.KeepVectors {
			dst.Eigenvectors = res.Vectors
		}
		switch {
		case errors.Is(err, estimators.ErrNotConverged):
			eigenErr = fmt.Errorf("top-%d eigenvalues: %w", k, err)
		case err != nil:
			return nil, cost, fmt.Errorf("top-%d eigenvalues: %w", k, err)
		default:
			next.Eigen = w
			vectors, products = res.Vectors, res.Products
			if cfg.Power {
				products = nil
			}
		}
	}
	if !cfg.NoTrace {
		if budget-esdCost < 2 {
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("%w before the trace (%d HVPs)", ErrBudget, cfg.MaxHVPs))
		}
		traceBudget := budget - esdCost
		if !cfg.TraceUncapped {
			traceBudget = min(traceBudget, cfg.TraceMaxHVPs)
		}
		res, w, err := estimators.Trace(ctx, op, estimators.TraceOptions{
			RelTol: cfg.TraceRelTol, MaxHVPs: traceBudget, Seed: cfg.Seed + 1,
			Blocks: blocks, Deflate: vectors, DeflateProducts: products,
		}, warm.Trace)
		cost.Trace = res.HVPs
		budget -= res.HVPs
		if err != nil {
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("trace: %w", err))
		}
		t := &snapshot.Trace{Value: res.Value, StdErr: res.StdErr, Probes: res.Probes, Method: res.Method}
		for _, b := range res.Blocks {
			t.Blocks = append(t.Blocks, snapshot.BlockTrace{Name: b.Name, Value: b.Value, StdErr: b.StdErr})
		}
		dst.Trace = t
		next.Trace = w
	}
	if !cfg.NoESD {
		if budget < esdCost {
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("%w before the ESD (%d HVPs)", ErrBudget, cfg.MaxHVPs))
		}
		res, w, err := estimators.ESD(ctx, op, estimators.ESDOptions{
			Probes: cfg.ESDProbes, Steps: min(cfg.ESDSteps, op.Dim()), Seed: cfg.Seed + 2,
		}, warm.ESD)
		cost.ESD = res.HVPs
		if err != nil {
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("ESD: %w", err))
		}
		dst.ESD = &snapshot.ESD{Nodes: res.Nodes, Weights: res.Weights, Probes: res.Probes, Steps: res.Steps, Sigma2: ESDSigma2}
		next.ESD = w
	}
	if eigenErr != nil {
		return nil, cost, eigenErr
	}
	return next, cost, nil
}

// ESDSigma2 is the Gaussian kernel variance recorded with each ESD:
// PyHessian's density_generate default, scaled there by the spectrum's range.
const ESDSigma2 = 1e-5
