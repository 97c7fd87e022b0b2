package monitor

import (
	"context"
	"errors"
	"fmt"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/internal/krylov"
	"github.com/hessmon/hessmon/snapshot"
)

// Snapshot is the value every probe produces (see package snapshot).
type Snapshot = snapshot.Snapshot

// Cost is what one Analyze spent, by estimate, in HVPs of the operator.
type Cost struct {
	Eigen, Trace, ESD int
	// Preconditioned is λ1(P⁻¹H)'s, Blocks the block λ1s'.
	Preconditioned, Blocks int
}

// Total is the sum of the parts.
func (c Cost) Total() int { return c.Eigen + c.Trace + c.ESD + c.Preconditioned + c.Blocks }

// Inputs are what Analyze needs beyond the operator and the Config.
type Inputs struct {
	// Blocks partition the parameter vector for per-block traces and the
	// top eigenvector's mass per block (nil: none).
	Blocks []estimators.Block
	// Preconditioner is the diagonal of an adaptive optimiser's P (Adam's,
	// trainer.Preconditioned): Analyze then adds λ1(P⁻¹H) with its
	// residual. Nil for SGD.
	Preconditioner []float64
	// Warm is the previous call's state (nil: cold). Cold ignores its
	// eigen part: a warm solve only sees directions the old eigenvectors or
	// the change of H lead to, so an eigenvalue rising from elsewhere is
	// caught by a periodic cold solve.
	Warm *estimators.Warm
	Cold bool
	// BlockEigen adds λ1 of each diagonal block (groups of Blocks by
	// Config.BlockGroups), one solve each.
	BlockEigen bool
}

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
// Eigenvectors with KeepVectors, LambdaMin, PreconditionedLambda1,
// BlockMass, BlockLambda1, Trace, ESD, Warm).
//
// The ESD's Lanczos steps are reserved from the budget first, the eigen
// solve gets what it needs, the trace the rest up to Config.TraceMaxHVPs;
// the eigen solve's H·v products deflate the trace at no extra HVPs. An
// eigen solve that stops at its budget (estimators.ErrNotConverged) still
// lets the trace and ESD run; the error is returned at the end with every
// estimate reached filled in. Analyze does not recover panics or check for
// NaN: the monitor's probe does that around it.
func Analyze(ctx context.Context, dst *snapshot.Snapshot, op hvp.Operator, cfg Config, in Inputs) (*estimators.Warm, Cost, error) {
	blocks, warm, cold := in.Blocks, in.Warm, in.Cold
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
	var vectors, products, basis, basisProducts [][]float64
	// The ESD's Lanczos basis, with its products, starts the eigen solve:
	// a random Krylov space of 30 steps already holds good approximations
	// of both ends of the spectrum, so the top-k cost little more than the
	// previous eigenvectors' products, and λmin comes with them.
	var esdRes *estimators.ESDResult
	var esdWarm *estimators.ESDWarm
	shared := !cfg.NoESD && !cfg.NoEigen && !cfg.Power && !cfg.SeparateESD &&
		esdCost*op.Dim() <= sharedKrylovMaxFloats && budget >= esdCost
	if shared {
		res, w, err := estimators.ESD(ctx, op, estimators.ESDOptions{
			Probes: cfg.ESDProbes, Steps: min(cfg.ESDSteps, op.Dim()), Seed: cfg.Seed + 2, KeepBasis: true,
		}, warm.ESD)
		cost.ESD = res.HVPs
		if err != nil {
			return nil, cost, fmt.Errorf("ESD: %w", err)
		}
		esdRes, esdWarm = &res, w
	}
	if !cfg.NoEigen {
		k := min(cfg.TopK, op.Dim())
		if esdRes != nil {
			budget -= cost.ESD
			esdCost = 0 // spent
		}
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
			eo := estimators.EigenOptions{
				K: k, Order: cfg.Order, Tol: cfg.EigenTol, MaxHVPs: limit,
				Seed: cfg.Seed, KeepVectors: true, KeepProducts: true,
				MinTol: cfg.LambdaMinTol, KeepBasis: esdRes != nil, WarmMaxHVPs: cfg.EigenWarmMaxHVPs,
				Start: &krylov.Start{NoRefine: cfg.WarmKrylovSchur},
			}
			if esdRes != nil {
				eo.Start.Basis, eo.Start.Products = esdRes.Basis, esdRes.Products
				eo.Start.Orthonormal = esdRes.Probes == 1 // one probe's Lanczos vectors are orthonormal; several are not
			}
			res, w, err = estimators.TopEigen(ctx, op, eo, eigenWarm)
			if len(res.Values) > 0 && cfg.Order == estimators.Algebraic {
				dst.LambdaMin = &snapshot.Eigenpair{Value: res.Min, Residual: res.MinResidual}
			}
		}
		cost.Eigen = res.HVPs
		budget -= res.HVPs
		// A probe is warm when it started from the previous one's state,
		// even if the ESD's Krylov space alone held the eigenpairs.
		dst.Warm = res.Warm || (in.Warm != nil && in.Warm.Eigen != nil && !cold && esdRes != nil)
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
			basis, basisProducts = res.Basis, res.BasisProducts
			if cfg.Power {
				products = nil
			}
		}
	}
	if len(vectors) > 0 && len(blocks) > 0 {
		dst.BlockMass = blockMass(vectors[0], blocks)
	}
	if in.Preconditioner != nil && !cfg.NoEigen {
		pop, err := hvp.NewInversePreconditioned(op, in.Preconditioner)
		if err != nil {
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("preconditioned sharpness: %w", err))
		}
		pw := warm.Precond
		if cold {
			pw = nil
		}
		res, w, err := estimators.TopEigen(ctx, pop, estimators.EigenOptions{
			K: 1, Tol: cfg.EigenTol, MaxHVPs: max(1, budget-esdCost-2), Seed: cfg.Seed + 3,
		}, pw)
		cost.Preconditioned = res.HVPs
		budget -= res.HVPs
		if len(res.Values) > 0 {
			dst.PreconditionedLambda1 = &snapshot.Eigenpair{Value: res.Values[0], Residual: res.Residuals[0]}
		}
		switch {
		case errors.Is(err, estimators.ErrNotConverged):
			eigenErr = errors.Join(eigenErr, fmt.Errorf("preconditioned sharpness: %w", err))
		case err != nil:
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("preconditioned sharpness: %w", err))
		default:
			next.Precond = w
		}
	}
	if in.BlockEigen && len(blocks) > 0 && !cfg.NoEigen {
		groups := estimators.GroupBlocks(blocks, cfg.BlockGroups)
		res, _, err := estimators.BlockEigen(ctx, op, groups, estimators.EigenOptions{
			Tol: cfg.EigenTol, MaxHVPs: max(1, (budget-esdCost-2)/max(1, len(groups))), Seed: cfg.Seed + 4,
		}, nil)
		for _, r := range res {
			cost.Blocks += r.HVPs
			dst.BlockLambda1 = append(dst.BlockLambda1, snapshot.BlockValue{Name: r.Name, Value: r.Value, Residual: r.Residual})
		}
		budget -= cost.Blocks
		if err != nil {
			return nil, cost, errors.Join(eigenErr, fmt.Errorf("block eigenvalues: %w", err))
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
		defl, deflProducts := vectors, products
		if len(basis) > 0 {
			// The eigen solve's whole basis (the ESD's Krylov vectors, the
			// previous eigenvectors, the corrections) deflates: its part of
			// the trace, tr(QᵀHQ), is exact and costs nothing. It holds the
			// eigenvectors, so they are not passed again (a dependent set).
			defl, deflProducts = basis, basisProducts
		}
		res, w, err := estimators.Trace(ctx, op, estimators.TraceOptions{
			RelTol: cfg.TraceRelTol, MaxHVPs: traceBudget, Seed: cfg.Seed + 1,
			Blocks: blocks, Deflate: defl, DeflateProducts: deflProducts, DeflateOrthonormal: len(basis) > 0,
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
	if esdRes != nil {
		dst.ESD = &snapshot.ESD{Nodes: esdRes.Nodes, Weights: esdRes.Weights, Probes: esdRes.Probes, Steps: esdRes.Steps, Sigma2: ESDSigma2}
		next.ESD = esdWarm
	} else if !cfg.NoESD {
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

// blockMass returns ‖v[b]‖² for each block b of the unit vector v.
func blockMass(v []float64, blocks []estimators.Block) []snapshot.BlockValue {
	out := make([]snapshot.BlockValue, 0, len(blocks))
	for _, b := range blocks {
		if b.Offset < 0 || b.Offset+b.Len > len(v) {
			continue
		}
		var m float64
		for _, x := range v[b.Offset : b.Offset+b.Len] {
			m += x * x
		}
		out = append(out, snapshot.BlockValue{Name: b.Name, Value: m})
	}
	return out
}

// sharedKrylovMaxFloats bounds the ESD basis kept for the eigen solve
// (2 × steps × dim floats: 1 GiB here); larger models run the two apart.
const sharedKrylovMaxFloats = 1 << 26

// ESDSigma2 is the Gaussian kernel variance recorded with each ESD:
// PyHessian's density_generate default, scaled there by the spectrum's range.
const ESDSigma2 = 1e-5
