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

var errBudget = errors.New("HVP budget exhausted")

// runEstimators fills s from the configured estimators, each warm-started
// from warm, within cfg.MaxHVPs products. The ESD's m Lanczos steps are
// reserved first, the eigen solve gets what it needs, the trace the rest
// up to cfg.TraceMaxHVPs.
// With cold set the eigen solve ignores its warm state: a warm solve only
// sees directions the old eigenvectors or the change of H lead to, so an
// eigenvalue rising from elsewhere is caught by the periodic cold solve.
// The eigen solve's H·v products deflate the trace at no extra HVPs.
func runEstimators(ctx context.Context, s *snapshot.Snapshot, op hvp.Operator, cfg Config, meta Meta, warm *estimators.Warm, cold bool) (*estimators.Warm, error) {
	if warm == nil {
		warm = new(estimators.Warm)
	}
	next := new(estimators.Warm)
	budget := cfg.MaxHVPs
	esdCost := 0
	if !cfg.NoESD {
		esdCost = cfg.ESDProbes * cfg.ESDSteps
	}
	var vectors, products [][]float64
	if cfg.TopK > 0 {
		eigenWarm := warm.Eigen
		if cold {
			eigenWarm = nil
		}
		res, w, err := estimators.TopEigen(ctx, op, estimators.EigenOptions{
			K: cfg.TopK, Order: cfg.Order, Tol: cfg.EigenTol, MaxHVPs: max(1, budget-esdCost-10),
			Seed: cfg.Seed, KeepVectors: true, KeepProducts: true,
		}, eigenWarm)
		s.Warm = res.Warm
		budget -= res.HVPs
		s.Eigenvalues, s.Residuals = res.Values, res.Residuals
		if cfg.KeepVectors {
			s.Eigenvectors = res.Vectors
		}
		if err != nil {
			return nil, fmt.Errorf("top-%d eigenvalues: %w", cfg.TopK, err)
		}
		next.Eigen = w
		vectors, products = res.Vectors, res.Products
	}
	if !cfg.NoTrace {
		if budget-esdCost < 2 {
			return nil, fmt.Errorf("%w before the trace (%d HVPs)", errBudget, cfg.MaxHVPs)
		}
		traceBudget := budget - esdCost
		if cfg.TraceMaxHVPs > 0 {
			traceBudget = min(traceBudget, cfg.TraceMaxHVPs)
		}
		res, w, err := estimators.Trace(ctx, op, estimators.TraceOptions{
			RelTol: cfg.TraceRelTol, MaxHVPs: traceBudget, Seed: cfg.Seed + 1,
			Blocks: meta.Blocks, Deflate: vectors, DeflateProducts: products,
		}, warm.Trace)
		budget -= res.HVPs
		if err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		t := &snapshot.Trace{Value: res.Value, StdErr: res.StdErr, Probes: res.Probes, Method: res.Method}
		for _, b := range res.Blocks {
			t.Blocks = append(t.Blocks, snapshot.BlockTrace{Name: b.Name, Value: b.Value, StdErr: b.StdErr})
		}
		s.Trace = t
		next.Trace = w
	}
	if !cfg.NoESD {
		if budget < esdCost {
			return nil, fmt.Errorf("%w before the ESD (%d HVPs)", errBudget, cfg.MaxHVPs)
		}
		res, w, err := estimators.ESD(ctx, op, estimators.ESDOptions{
			Probes: cfg.ESDProbes, Steps: cfg.ESDSteps, Seed: cfg.Seed + 2,
		}, warm.ESD)
		if err != nil {
			return nil, fmt.Errorf("ESD: %w", err)
		}
		s.ESD = &snapshot.ESD{Nodes: res.Nodes, Weights: res.Weights, Probes: res.Probes, Steps: res.Steps, Sigma2: esdSigma2}
		next.ESD = w
	}
	return next, nil
}

// esdSigma2 is the Gaussian kernel variance recorded with each ESD:
// PyHessian's density_generate default, scaled there by the spectrum's range.
const esdSigma2 = 1e-5
