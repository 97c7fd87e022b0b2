package monitor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

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
// full probe and `hessmon analyze` once; both therefore report the same
// thing for the same operator and Config.
//
// Analyze writes only the estimate fields of dst (Eigenvalues, Residuals,
// Eigenvectors with KeepVectors, LambdaMin, PreconditionedLambda1,
// BlockMass, BlockLambda1, Trace, ESD, Warm) and PeakBytes, the probe's
// predicted peak: 8·n bytes times the n-vectors its estimators hold at
// once, warm + shared ESD basis + eigen + max(trace, the other stages)
// (the memory model below; the operator's own memory, such as a float32
// operator's frozen model copy, is not counted). A peak over
// Config.MaxProbeBytes shrinks the probe first (ESD apart, fewer ESD
// steps, then a light probe: Kind light, the next warm state unchanged),
// with a note in Detail.
//
// The HVPs come from one Budget of Config.MaxHVPs: the ESD's Lanczos steps
// are reserved first, the eigen solve gets what it needs but leaves
// EigenReserve, the trace the rest up to Config.TraceMaxHVPs; the eigen
// solve's H·v products deflate the trace at no extra HVPs. An eigen solve
// that stops at its budget (estimators.ErrNotConverged) still lets the
// trace and ESD run; the error is returned at the end with every estimate
// reached filled in. Analyze does not recover panics or check for NaN: the
// monitor's probe does that around it.
func Analyze(ctx context.Context, dst *snapshot.Snapshot, op hvp.Operator, cfg Config, in Inputs) (*estimators.Warm, Cost, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, Cost{}, err
	}
	plan := planFull(cfg, op.Dim(), in)
	if plan.light {
		dst.Kind, dst.Detail = snapshot.KindLight, joinNote(dst.Detail, plan.note)
		_, cost, err := AnalyzeLight(ctx, dst, op, cfg, in, nil)
		if err != nil {
			return nil, cost, err
		}
		return in.Warm, cost, nil
	}
	cfg.ESDSteps = max(plan.steps, 1)
	dst.PeakBytes = int64(plan.vectors) * 8 * int64(op.Dim())
	dst.Detail = joinNote(dst.Detail, plan.note)
	a := &analysis{cfg: cfg, op: op, in: in, dst: dst, warm: in.Warm, next: new(estimators.Warm), budget: NewBudget(cfg.MaxHVPs), shared: plan.shared}
	if a.warm == nil {
		a.warm = new(estimators.Warm)
	}
	a.esdCost = ESDCost(cfg, op.Dim())
	a.budget.Reserve(a.esdCost)
	stages := []func(context.Context) error{a.sharedESD, a.eigen, a.preconditioned, a.blockEigen, a.trace, a.esd}
	for _, stage := range stages {
		if err := stage(ctx); err != nil {
			return nil, a.cost, errors.Join(a.eigenErr, err)
		}
	}
	if a.eigenErr != nil {
		return nil, a.cost, a.eigenErr
	}
	return a.next, a.cost, nil
}

// analysis is one Analyze: its inputs, its budget, and what each stage
// leaves for the next.
type analysis struct {
	cfg        Config
	op         hvp.Operator
	in         Inputs
	dst        *snapshot.Snapshot
	warm, next *estimators.Warm
	budget     *Budget
	esdCost    int  // the ESD's reserved Lanczos steps (0 once spent)
	shared     bool // the ESD's basis may start the eigen solve (planFull)
	cost       Cost
	// eigenErr is an eigen solve that stopped at its budget: the other
	// estimates still run, and Analyze returns it at the end.
	eigenErr error
	// The eigen solve's vectors and basis with their products, which
	// deflate the trace.
	vectors, products, basis, basisProducts [][]float64
	// The ESD run first, whose Krylov basis starts the eigen solve.
	esdRes  *estimators.ESDResult
	esdWarm *estimators.ESDWarm
}

// sharedESD runs the ESD first when its Lanczos basis, with its products,
// can start the eigen solve: a random Krylov space of 30 steps already
// holds good approximations of both ends of the spectrum, so the top-k
// cost little more than the previous eigenvectors' products, and λmin
// comes with them.
func (a *analysis) sharedESD(ctx context.Context) error {
	c := a.cfg
	if !a.shared || a.budget.Left() < 0 {
		return nil
	}
	res, w, err := estimators.ESD(ctx, a.op, estimators.ESDOptions{
		Probes: c.ESDProbes, Steps: min(c.ESDSteps, a.op.Dim()), Seed: c.Seed + 2, KeepBasis: true,
	}, a.warm.ESD)
	a.cost.ESD = res.HVPs
	if err != nil {
		return fmt.Errorf("ESD: %w", err)
	}
	a.esdRes, a.esdWarm = &res, w
	a.budget.Unreserve(a.esdCost)
	a.budget.Spend(res.HVPs)
	a.esdCost = 0
	return nil
}

// eigen is the top-k solve (and λmin from its Krylov space).
func (a *analysis) eigen(ctx context.Context) error {
	c := a.cfg
	if c.NoEigen {
		return nil
	}
	k := min(c.TopK, a.op.Dim())
	limit := max(1, a.budget.Left()-EigenReserve)
	if c.EigenMaxHVPs > 0 {
		limit = min(limit, c.EigenMaxHVPs)
	}
	var res estimators.EigenResult
	var w *estimators.EigenWarm
	var err error
	if c.Power {
		res, err = estimators.PowerIteration(ctx, a.op, estimators.PowerOptions{K: k, Seed: c.Seed, KeepVectors: true})
	} else {
		res, w, err = a.topEigen(ctx, k, limit)
	}
	a.cost.Eigen = res.HVPs
	a.budget.Spend(res.HVPs)
	// A probe is warm when it started from the previous one's state,
	// even if the ESD's Krylov space alone held the eigenpairs.
	a.dst.Warm = res.Warm || (a.in.Warm != nil && a.in.Warm.Eigen != nil && !a.in.Cold && a.esdRes != nil)
	a.dst.Eigenvalues, a.dst.Residuals = res.Values, res.Residuals
	if c.KeepVectors {
		a.dst.Eigenvectors = res.Vectors
	}
	switch {
	case errors.Is(err, estimators.ErrNotConverged):
		a.eigenErr = fmt.Errorf("top-%d eigenvalues: %w", k, err)
	case err != nil:
		return fmt.Errorf("top-%d eigenvalues: %w", k, err)
	default:
		a.next.Eigen = w
		a.vectors, a.products = res.Vectors, res.Products
		a.basis, a.basisProducts = res.Basis, res.BasisProducts
		if c.Power {
			a.products = nil
		}
	}
	if len(a.vectors) > 0 && len(a.in.Blocks) > 0 {
		a.dst.BlockMass = blockMass(a.vectors[0], a.in.Blocks)
	}
	return nil
}

// topEigen is eigen's Krylov–Schur solve, from the ESD's basis when it ran.
func (a *analysis) topEigen(ctx context.Context, k, limit int) (estimators.EigenResult, *estimators.EigenWarm, error) {
	c := a.cfg
	eigenWarm := a.warm.Eigen
	if a.in.Cold {
		eigenWarm = nil
	}
	eo := estimators.EigenOptions{
		K: k, Order: c.Order, Tol: c.EigenTol, MaxHVPs: limit,
		Seed: c.Seed, KeepVectors: true, KeepProducts: true,
		MinTol: c.LambdaMinTol, KeepBasis: a.esdRes != nil, WarmMaxHVPs: c.EigenWarmMaxHVPs,
		Start: &krylov.Start{NoRefine: c.warmKrylovSchur},
	}
	if a.esdRes != nil {
		eo.Start.Basis, eo.Start.Products = a.esdRes.Basis, a.esdRes.Products
		eo.Start.Orthonormal = a.esdRes.Probes == 1 // one probe's Lanczos vectors are orthonormal; several are not
	}
	res, w, err := estimators.TopEigen(ctx, a.op, eo, eigenWarm)
	if len(res.Values) > 0 && c.Order == estimators.Algebraic {
		a.dst.LambdaMin = &snapshot.Eigenpair{Value: res.Min, Residual: res.MinResidual}
	}
	return res, w, err
}

// preconditioned is λ1(P⁻¹H) for an adaptive optimiser.
func (a *analysis) preconditioned(ctx context.Context) error {
	if a.in.Preconditioner == nil || a.cfg.NoEigen {
		return nil
	}
	pop, err := hvp.NewInversePreconditioned(a.op, a.in.Preconditioner)
	if err != nil {
		return fmt.Errorf("preconditioned sharpness: %w", err)
	}
	pw := a.warm.Precond
	if a.in.Cold {
		pw = nil
	}
	res, w, err := estimators.TopEigen(ctx, pop, estimators.EigenOptions{
		K: 1, Tol: a.cfg.EigenTol, MaxHVPs: max(1, a.budget.Left()-2), Seed: a.cfg.Seed + 3,
	}, pw)
	a.cost.Preconditioned = res.HVPs
	a.budget.Spend(res.HVPs)
	if len(res.Values) > 0 {
		a.dst.PreconditionedLambda1 = &snapshot.Eigenpair{Value: res.Values[0], Residual: res.Residuals[0]}
	}
	switch {
	case errors.Is(err, estimators.ErrNotConverged):
		a.eigenErr = errors.Join(a.eigenErr, fmt.Errorf("preconditioned sharpness: %w", err))
	case err != nil:
		return fmt.Errorf("preconditioned sharpness: %w", err)
	default:
		a.next.Precond = w
	}
	return nil
}

// blockEigen is λ1 of each diagonal block (groups of blocks).
func (a *analysis) blockEigen(ctx context.Context) error {
	blocks := a.in.Blocks
	if !a.in.BlockEigen || len(blocks) == 0 || a.cfg.NoEigen {
		return nil
	}
	groups := estimators.GroupBlocks(blocks, a.cfg.BlockGroups)
	res, _, err := estimators.BlockEigen(ctx, a.op, groups, estimators.EigenOptions{
		Tol: a.cfg.EigenTol, MaxHVPs: max(1, (a.budget.Left()-2)/max(1, len(groups))), Seed: a.cfg.Seed + 4,
	}, nil)
	for _, r := range res {
		a.cost.Blocks += r.HVPs
		a.dst.BlockLambda1 = append(a.dst.BlockLambda1, snapshot.BlockValue{Name: r.Name, Value: r.Value, Residual: r.Residual})
	}
	a.budget.Spend(a.cost.Blocks)
	if err != nil {
		return fmt.Errorf("block eigenvalues: %w", err)
	}
	return nil
}

// trace is the trace with its per-block traces, deflated by the eigen
// solve's basis.
func (a *analysis) trace(ctx context.Context) error {
	c := a.cfg
	if c.NoTrace {
		return nil
	}
	if a.budget.Left() < 2 {
		return fmt.Errorf("%w before the trace (%d HVPs)", ErrBudget, c.MaxHVPs)
	}
	traceBudget := a.budget.Left()
	if !c.TraceUncapped {
		traceBudget = min(traceBudget, c.TraceMaxHVPs)
	}
	defl, deflProducts := a.vectors, a.products
	if len(a.basis) > 0 {
		// The eigen solve's whole basis (the ESD's Krylov vectors, the
		// previous eigenvectors, the corrections) deflates: its part of
		// the trace, tr(QᵀHQ), is exact and costs nothing. It holds the
		// eigenvectors, so they are not passed again (a dependent set).
		defl, deflProducts = a.basis, a.basisProducts
	}
	res, w, err := estimators.Trace(ctx, a.op, estimators.TraceOptions{
		RelTol: c.TraceRelTol, MaxHVPs: traceBudget, Seed: c.Seed + 1,
		Blocks: a.in.Blocks, Deflate: defl, DeflateProducts: deflProducts, DeflateOrthonormal: len(a.basis) > 0,
	}, a.warm.Trace)
	a.cost.Trace = res.HVPs
	a.budget.Spend(res.HVPs)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	t := &snapshot.Trace{Value: res.Value, StdErr: res.StdErr, Probes: res.Probes, Method: res.Method}
	for _, b := range res.Blocks {
		t.Blocks = append(t.Blocks, snapshot.BlockTrace{Name: b.Name, Value: b.Value, StdErr: b.StdErr})
	}
	a.dst.Trace = t
	a.next.Trace = w
	return nil
}

// esd records the shared ESD, or runs it last from its reserve.
func (a *analysis) esd(ctx context.Context) error {
	c := a.cfg
	if a.esdRes != nil {
		r := a.esdRes
		a.dst.ESD = &snapshot.ESD{Nodes: r.Nodes, Weights: r.Weights, Probes: r.Probes, Steps: r.Steps, Sigma2: ESDSigma2}
		a.next.ESD = a.esdWarm
		return nil
	}
	if c.NoESD {
		return nil
	}
	if a.budget.Left() < 0 {
		return fmt.Errorf("%w before the ESD (%d HVPs)", ErrBudget, c.MaxHVPs)
	}
	res, w, err := estimators.ESD(ctx, a.op, estimators.ESDOptions{
		Probes: c.ESDProbes, Steps: min(c.ESDSteps, a.op.Dim()), Seed: c.Seed + 2,
	}, a.warm.ESD)
	a.cost.ESD = res.HVPs
	if err != nil {
		return fmt.Errorf("ESD: %w", err)
	}
	a.dst.ESD = &snapshot.ESD{Nodes: res.Nodes, Weights: res.Weights, Probes: res.Probes, Steps: res.Steps, Sigma2: ESDSigma2}
	a.next.ESD = w
	return nil
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
// (2 × steps × dim floats: 1 GiB here) whatever MaxProbeBytes allows;
// larger models run the two apart (planFull's first rung).
const sharedKrylovMaxFloats = 1 << 26

// ESDSigma2 is the Gaussian kernel variance recorded with each ESD:
// PyHessian's density_generate default, scaled there by the spectrum's range.
const ESDSigma2 = 1e-5

// The memory model. A probe's estimators hold their working set in
// n-vectors of float64 (8·n bytes each, n = op.Dim()); everything else is
// O(k²) or O(steps²). A full probe's peak is
//
//	warm + ESD + eigen + max(trace, λ1(P⁻¹H), block λ1s, separate ESD)
//
// n-vectors, where warm is the vectors of Inputs.Warm (the eigenvectors it
// starts from), ESD is ESDOptions{KeepBasis}.Vectors() when its basis is
// shared with the eigen solve (kept until the trace has run, which it
// deflates) and 0 otherwise, eigen is EigenOptions.Vectors() of the top-k
// solve (its results are kept through the trace), trace is
// TraceOptions.Vectors(n) deflated by them, the preconditioned and block
// solves are EigenOptions{K: 1}.Vectors() each, and a separate ESD runs
// last with ESDOptions.Vectors(). A light probe's is its warm vectors plus
// ExtremesOptions.Vectors() (plus EigenOptions{K: 1}.Vectors() for
// λ1(P⁻¹H)). The operator's own memory (a float32 operator's frozen copy
// of the model, its tape) is not counted.

// minESDSteps is the shortest ESD a memory limit shrinks to.
const minESDSteps = 10

// fullPlan is how a full probe runs within its memory limit.
type fullPlan struct {
	shared  bool  // the ESD's basis starts the eigen solve
	steps   int   // the ESD's Lanczos steps
	light   bool  // not even the shortest full probe fits: a light one runs
	vectors int   // the predicted peak n-vectors
	limit   int64 // MaxProbeBytes
	note    string
}

// planFull returns the full probe of cfg for an operator of dimension n that
// fits cfg.MaxProbeBytes: as configured if it fits; else with a shorter
// ESD, down to minESDSteps, still sharing its basis with the eigen solve;
// else with the ESD apart from the eigen solve, as long as configured or,
// failing that, shorter; else a light probe.
func planFull(cfg Config, n int, in Inputs) fullPlan {
	want := min(cfg.ESDSteps, n)
	p := fullPlan{steps: want, limit: probeByteLimit(cfg)}
	p.shared = !cfg.NoESD && !cfg.NoEigen && !cfg.Power && !cfg.separateESD &&
		cfg.ESDProbes*want*n <= sharedKrylovMaxFloats
	fits := func() bool {
		p.vectors = fullVectors(cfg, n, in, p.shared, p.steps)
		return int64(p.vectors)*8*int64(n) <= p.limit
	}
	if fits() {
		return p
	}
	floor := min(minESDSteps, want)
	shrink := func() bool {
		for p.steps = want; p.steps > floor && !cfg.NoESD; p.steps-- {
			if fits() {
				return true
			}
		}
		return fits()
	}
	if p.shared && shrink() {
		p.note = fmt.Sprintf("memory: ESD %d→%d steps to fit MaxProbeBytes %s", want, p.steps, fmtGB(p.limit))
		return p
	}
	shared := p.shared
	p.shared = false
	if shrink() {
		p.note = fmt.Sprintf("memory: ESD %d→%d steps to fit MaxProbeBytes %s", want, p.steps, fmtGB(p.limit))
		switch {
		case shared && p.steps == want:
			p.note = fmt.Sprintf("memory: ESD not shared with the eigen solve to fit MaxProbeBytes %s", fmtGB(p.limit))
		case shared:
			p.note = fmt.Sprintf("memory: ESD %d→%d steps, not shared with the eigen solve, to fit MaxProbeBytes %s", want, p.steps, fmtGB(p.limit))
		}
		return p
	}
	p.light = true
	p.note = fmt.Sprintf("memory: a full probe needs %s, over MaxProbeBytes %s: light probe only", fmtGB(int64(p.vectors)*8*int64(n)), fmtGB(p.limit))
	return p
}

// fullVectors is the full probe's peak n-vectors (see the memory model).
func fullVectors(cfg Config, n int, in Inputs, shared bool, steps int) int {
	v := warmVectors(in.Warm)
	k := min(cfg.TopK, n)
	if !cfg.NoESD && shared {
		v += estimators.ESDOptions{Probes: cfg.ESDProbes, Steps: steps, KeepBasis: true}.Vectors()
	}
	stage := 0
	if !cfg.NoEigen {
		v += estimators.EigenOptions{K: k, KeepVectors: true, KeepProducts: true, KeepBasis: shared}.Vectors()
		one := estimators.EigenOptions{K: 1}.Vectors()
		if in.Preconditioner != nil {
			stage = max(stage, one+1)
		}
		if in.BlockEigen && len(in.Blocks) > 0 {
			stage = max(stage, one)
		}
	}
	if !cfg.NoTrace {
		to := estimators.TraceOptions{Blocks: in.Blocks, DeflateOrthonormal: shared}
		if !cfg.NoEigen {
			to.Deflate, to.DeflateProducts = make([][]float64, k), make([][]float64, k)
		}
		stage = max(stage, to.Vectors(n))
	}
	if !cfg.NoESD && !shared {
		stage = max(stage, estimators.ESDOptions{Probes: cfg.ESDProbes, Steps: steps}.Vectors())
	}
	return v + stage
}

// warmVectors counts the n-vectors of a full probe's warm state.
func warmVectors(w *estimators.Warm) int {
	if w == nil {
		return 0
	}
	v := 0
	for _, e := range []*estimators.EigenWarm{w.Eigen, w.Precond} {
		if e != nil {
			v += len(e.Vectors)
		}
	}
	return v
}

// probeByteLimit is cfg.MaxProbeBytes, or its default: the Go memory limit
// (GOMEMLIMIT, debug.SetMemoryLimit) when one is set, else half the
// machine's memory, else no limit.
func probeByteLimit(cfg Config) int64 {
	if cfg.MaxProbeBytes > 0 {
		return cfg.MaxProbeBytes
	}
	if l := debug.SetMemoryLimit(-1); l < math.MaxInt64 {
		return l
	}
	if t, err := memTotal(); err == nil && t > 0 {
		return t / 2
	}
	return math.MaxInt64
}

// memTotal is the machine's memory, MemTotal of /proc/meminfo, in bytes.
func memTotal() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("monitor: memory size: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("monitor: memory size: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("monitor: memory size: no MemTotal in /proc/meminfo")
}

// fmtGB formats bytes for a snapshot's Detail.
func fmtGB(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%d B", b)
	}
}

// joinNote appends a note to a snapshot's Detail.
func joinNote(detail, note string) string {
	switch {
	case note == "":
		return detail
	case detail == "":
		return note
	default:
		return detail + "; " + note
	}
}
