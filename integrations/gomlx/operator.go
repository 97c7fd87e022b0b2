// Package gomlx brings hessmon's curvature monitor to GoMLX models
// (github.com/gomlx/gomlx v0.26.0, pure-Go backend simplego).
//
// An Operator is the Hessian of a GoMLX model's training loss on one fixed
// probe batch, as an hvp.Operator. Its products are exact (grad of grad,
// GoMLX has reverse-mode autodiff only): H·v = ∇_θ ⟨∇_θ L(θ), v⟩ with v fed
// to the compiled graph as an input, so a new v or new weights never
// recompile. Attach wires an Operator and a monitor.Monitor into a
// train.Loop.
//
// Importing this package changes nothing in GoMLX. v0.26.0's own VJPs of
// Dot and DotGeneral make an HVP of an MLP at batch 1000 cost seconds and
// gigabytes; a program opts into contraction-based ones, for every graph it
// builds, with UseFastVJPs at the start of main (see vjp.go).
package gomlx

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
)

// Config describes what the Operator differentiates.
type Config struct {
	// Model and Loss are the functions given to train.NewTrainer (the
	// trainer keeps them private). Loss may be nil when the model adds its
	// loss terms with train.AddLoss. Terms added with train.AddLoss, such as
	// the regularisers of layers.Dense, are part of the loss in either case.
	Model train.ModelFn
	Loss  train.LossFn
	// Spec is the spec value passed to Model (nil for most datasets).
	Spec any
	// Inputs and Labels are the fixed probe batch, as a train.Dataset would
	// yield them. They are copied.
	Inputs, Labels []*tensors.Tensor
	// Training builds the probe graph with ctx.SetTraining(g, true). The
	// default (false) is the evaluation-mode Hessian: dropout off, which is
	// also the only deterministic choice, since dropout draws a new mask on
	// every execution and the operator would not be a fixed matrix.
	Training bool
	// Kind, if set, names the kind of each trainable variable (from its
	// scope and name, e.g. "/model/block0/mha/query/dense/weights" →
	// "attention QK"). The parameter vector then holds the variables of one
	// kind contiguously (kinds in order of first appearance, variables in
	// creation order within a kind) and Blocks returns one block per kind,
	// whose trace is the kind's share tr(H_kk) of the Hessian trace.
	Kind func(scopeAndName string) string
	// Backend runs the probe graphs. nil means a private simplego backend
	// with sequential op execution, so that an asynchronous probe never
	// shares the training backend's worker pool (simplego v0.26.0 can
	// deadlock when many parallel ops from concurrent executions wait on
	// that pool).
	Backend backends.Backend
}

// Operator is the Hessian of a GoMLX model's loss on a fixed probe batch at a
// frozen copy of its parameters.
//
// The parameter vector is the concatenation, in the order the context
// created them (context.IterVariables), of every trainable variable that
// the loss graph uses, each flattened row-major (GoMLX's layout: a
// layers.Dense weight is [in, out], the transpose of PyTorch's [out, in]).
// Blocks returns one estimators.Block per variable, named by its
// scope and name (e.g. "/model/dense/weights"), or one per kind with
// Config.Kind.
//
// Apply, Gradient, Loss and Refresh are safe for concurrent use; calls are
// serialised.
type Operator struct {
	mu      sync.Mutex
	backend backends.Backend
	own     bool // backend created here, finalised by Finalize
	cfg     Config
	ctx     *context.Context // the frozen copy
	nIn     int
	nLab    int
	inputs  []*tensors.Tensor
	labels  []*tensors.Tensor

	params []*context.Variable // trainable, used by the loss graph, in order
	used   []*context.Variable // every variable the loss graph reads (params + e.g. running statistics)
	blocks []estimators.Block  // one per variable, parallel to params
	kinds  []estimators.Block  // one per kind, with Config.Kind
	dim    int
	dtype  dtypes.DType

	lossExec, gradExec, hvpExec *context.Exec
	hvpBuilds                   int // times the HVP graph was built (tests: Refresh must not rebuild)
	loss                        float64
	lossValid                   bool
}

var _ hvp.Operator = (*Operator)(nil)

// ErrNoVariables is returned when the model's variables do not exist yet:
// GoMLX creates them on the first training step (or an explicit
// initialisation), so an Operator can be made only after that.
var ErrNoVariables = errors.New("gomlx: the loss graph uses no trainable variable (variables exist only after the first training step)")

// New freezes a copy of the variables of live and compiles the probe's loss
// graph. live is the context given to train.NewTrainer (its variables must
// exist: make the Operator after the first training step).
func New(live *context.Context, cfg Config) (*Operator, error) {
	if live == nil || cfg.Model == nil {
		return nil, errors.New("gomlx: New needs a context and a Model")
	}
	if len(cfg.Inputs) == 0 {
		return nil, errors.New("gomlx: New needs a probe batch (Config.Inputs)")
	}
	o := &Operator{cfg: cfg, backend: cfg.Backend, nIn: len(cfg.Inputs), nLab: len(cfg.Labels)}
	if o.backend == nil {
		b, err := simplego.New("ops_sequential")
		if err != nil {
			return nil, fmt.Errorf("gomlx: simplego backend: %w", err)
		}
		o.backend, o.own = b, true
	}
	var err error
	for _, t := range cfg.Inputs {
		c, cerr := t.LocalClone()
		if cerr != nil {
			return nil, fmt.Errorf("gomlx: copying probe input: %w", cerr)
		}
		o.inputs = append(o.inputs, c)
	}
	for _, t := range cfg.Labels {
		c, cerr := t.LocalClone()
		if cerr != nil {
			return nil, fmt.Errorf("gomlx: copying probe label: %w", cerr)
		}
		o.labels = append(o.labels, c)
	}
	frozen, err := live.Clone()
	if err != nil {
		return nil, fmt.Errorf("gomlx: freezing the context: %w", err)
	}
	// Clone copies values on the training backend; the probe may run on
	// another one, so every value is moved to host memory.
	for v := range frozen.IterVariables() {
		if !v.HasValue() {
			continue
		}
		t, verr := v.Value()
		if verr != nil {
			return nil, fmt.Errorf("gomlx: reading %s: %w", v.ScopeAndName(), verr)
		}
		lc, verr := t.LocalClone()
		if verr == nil {
			verr = v.SetValue(lc)
		}
		if verr != nil {
			return nil, fmt.Errorf("gomlx: copying %s: %w", v.ScopeAndName(), verr)
		}
	}
	// Reuse: the probe must never create (or silently re-initialise) a variable.
	o.ctx = frozen.Reuse()
	o.lossExec, err = context.NewExec(o.backend, o.ctx, o.lossGraph)
	if err != nil {
		return nil, fmt.Errorf("gomlx: loss graph: %w", err)
	}
	// The first execution builds the graph, which discovers the variables.
	if _, err := o.evalLoss(); err != nil {
		return nil, err
	}
	if o.dim == 0 {
		return nil, ErrNoVariables
	}
	return o, nil
}

// probeArgs are the inputs and labels as Exec arguments, followed by extra.
func (o *Operator) probeArgs(extra ...any) []any {
	args := make([]any, 0, o.nIn+o.nLab+len(extra))
	for _, t := range o.inputs {
		args = append(args, t)
	}
	for _, t := range o.labels {
		args = append(args, t)
	}
	return append(args, extra...)
}

// buildLoss builds the scalar training loss: Loss(labels, Model(inputs))
// (reduced to its mean if not scalar) plus every train.AddLoss term.
func (o *Operator) buildLoss(ctx *context.Context, nodes []*graph.Node) *graph.Node {
	g := nodes[0].Graph()
	ctx.SetTraining(g, o.cfg.Training)
	inputs, labels := nodes[:o.nIn], nodes[o.nIn:o.nIn+o.nLab]
	preds := o.cfg.Model(ctx, o.cfg.Spec, inputs)
	if o.cfg.Loss != nil {
		l := o.cfg.Loss(labels, preds)
		if !l.Shape().IsScalar() {
			l = graph.ReduceAllMean(l)
		}
		train.AddLoss(ctx, l)
	}
	lossAny, found := ctx.InAbsPath(train.TrainerAbsoluteScope).GetGraphParam(g, train.TrainerLossGraphParamKey)
	loss, _ := lossAny.(*graph.Node)
	if !found || loss == nil {
		panicf("gomlx: the model added no loss (Config.Loss is nil and nothing called train.AddLoss)")
	}
	return loss
}

// lossGraph is the forward pass. Its first build records which variables
// the loss uses; that defines the parameter vector.
func (o *Operator) lossGraph(ctx *context.Context, nodes []*graph.Node) *graph.Node {
	loss := o.buildLoss(ctx, nodes)
	g := loss.Graph()
	if o.used == nil {
		o.discover(ctx, g)
	}
	return graph.ConvertDType(loss, dtypes.Float64)
}

// discover records the variables g uses and lays out the parameter vector.
func (o *Operator) discover(ctx *context.Context, g *graph.Graph) {
	for v := range ctx.IterVariables() {
		if !v.InUseByGraph(g) {
			continue
		}
		o.used = append(o.used, v)
		if !v.Trainable {
			continue
		}
		o.params = append(o.params, v)
		if o.dtype == dtypes.InvalidDType {
			o.dtype = v.DType()
		} else if o.dtype != v.DType() {
			panicf("gomlx: trainable variables of different dtypes (%s and %s) are not supported", o.dtype, v.DType())
		}
	}
	var kindOf []string
	if o.cfg.Kind != nil {
		// Stable grouping: kinds in order of first appearance.
		rank := map[string]int{}
		for _, v := range o.params {
			k := o.cfg.Kind(v.ScopeAndName())
			if _, ok := rank[k]; !ok {
				rank[k] = len(rank)
			}
		}
		idx := make([]int, len(o.params))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int {
			return rank[o.cfg.Kind(o.params[a].ScopeAndName())] - rank[o.cfg.Kind(o.params[b].ScopeAndName())]
		})
		sorted := make([]*context.Variable, len(idx))
		for i, j := range idx {
			sorted[i] = o.params[j]
		}
		o.params = sorted
		for _, v := range o.params {
			kindOf = append(kindOf, o.cfg.Kind(v.ScopeAndName()))
		}
	}
	off := 0
	for i, v := range o.params {
		n := v.Shape().Size()
		o.blocks = append(o.blocks, estimators.Block{Name: v.ScopeAndName(), Offset: off, Len: n})
		if kindOf != nil {
			if k := len(o.kinds); k > 0 && o.kinds[k-1].Name == kindOf[i] {
				o.kinds[k-1].Len += n
			} else {
				o.kinds = append(o.kinds, estimators.Block{Name: kindOf[i], Offset: off, Len: n})
			}
		}
		off += n
	}
	o.dim = off
}

// paramNodes are the parameter nodes of g, in the operator's order.
func (o *Operator) paramNodes(g *graph.Graph) []*graph.Node {
	nodes := make([]*graph.Node, len(o.params))
	for i, v := range o.params {
		nodes[i] = v.ValueGraph(g)
	}
	return nodes
}

// flatten concatenates the nodes row-major into one float64 vector.
func flatten(nodes []*graph.Node) *graph.Node {
	flat := make([]*graph.Node, len(nodes))
	for i, n := range nodes {
		flat[i] = graph.Reshape(n, -1)
	}
	out := flat[0]
	if len(flat) > 1 {
		out = graph.Concatenate(flat, 0)
	}
	return graph.ConvertDType(out, dtypes.Float64)
}

// gradGraph returns the loss and its flat gradient.
func (o *Operator) gradGraph(ctx *context.Context, nodes []*graph.Node) []*graph.Node {
	loss := o.buildLoss(ctx, nodes)
	grads := graph.Gradient(loss, o.paramNodes(loss.Graph())...)
	return []*graph.Node{graph.ConvertDType(loss, dtypes.Float64), flatten(grads)}
}

// hvpGraph returns H·v for the flat vector v (the last input):
// ∇_θ ⟨∇_θ L, v⟩.
func (o *Operator) hvpGraph(ctx *context.Context, nodes []*graph.Node) *graph.Node {
	o.hvpBuilds++
	v := nodes[len(nodes)-1]
	loss := o.buildLoss(ctx, nodes[:len(nodes)-1])
	params := o.paramNodes(loss.Graph())
	grads := graph.Gradient(loss, params...)
	var dot *graph.Node
	for i, gr := range grads {
		b := o.blocks[i]
		vi := graph.Slice(v, graph.AxisRange(b.Offset, b.Offset+b.Len))
		vi = graph.Reshape(vi, params[i].Shape().Dimensions...)
		term := graph.ReduceAllSum(graph.Mul(gr, vi))
		if dot == nil {
			dot = term
		} else {
			dot = graph.Add(dot, term)
		}
	}
	return flatten(graph.Gradient(dot, params...))
}

// Dim is the number of trainable parameters the loss uses.
func (o *Operator) Dim() int { return o.dim }

// Blocks returns one block per trainable variable, in parameter order, or
// one block per kind when Config.Kind is set.
func (o *Operator) Blocks() []estimators.Block {
	if o.kinds != nil {
		return slices.Clone(o.kinds)
	}
	return slices.Clone(o.blocks)
}

// VariableBlocks returns one block per trainable variable, in parameter
// order, whether or not Config.Kind is set.
func (o *Operator) VariableBlocks() []estimators.Block { return slices.Clone(o.blocks) }

// Variables returns the trainable variables in parameter order (of the
// frozen copy; read them, don't change them).
func (o *Operator) Variables() []*context.Variable {
	return append([]*context.Variable(nil), o.params...)
}

// DType is the dtype of the model's variables. The products are computed in
// it: float64 models give float64 products, float32 models float32 ones.
func (o *Operator) DType() dtypes.DType { return o.dtype }

// vector turns a float64 slice into a tensor of the model's dtype.
func (o *Operator) vector(v []float64) *tensors.Tensor {
	switch o.dtype {
	case dtypes.Float32:
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		return tensors.FromFlatDataAndDimensions(f, len(f))
	default:
		return tensors.FromFlatDataAndDimensions(append([]float64(nil), v...), len(v))
	}
}

// run executes e and copies the float64 outputs into dsts (a nil dst
// means a scalar to return).
func run(e *context.Exec, args []any, dsts ...[]float64) (scalars []float64, err error) {
	err = tryCatch(func() {
		outs, execErr := e.Exec(args...)
		if execErr != nil {
			panic(execErr)
		}
		defer func() {
			for _, t := range outs {
				_ = t.FinalizeAll()
			}
		}()
		if len(outs) != len(dsts) {
			panicf("gomlx: graph returned %d outputs, want %d", len(outs), len(dsts))
		}
		for i, t := range outs {
			tensors.MustConstFlatData(t, func(flat []float64) {
				if dsts[i] == nil {
					scalars = append(scalars, flat[0])
					return
				}
				if len(flat) != len(dsts[i]) {
					panicf("gomlx: output %d has %d values, want %d", i, len(flat), len(dsts[i]))
				}
				copy(dsts[i], flat)
			})
		}
	})
	return scalars, err
}

func (o *Operator) evalLoss() (float64, error) {
	s, err := run(o.lossExec, o.probeArgs(), nil)
	if err != nil {
		return math.NaN(), fmt.Errorf("gomlx: loss: %w", err)
	}
	o.loss, o.lossValid = s[0], true
	return o.loss, nil
}

// Apply computes dst = H·v.
func (o *Operator) Apply(dst, v []float64) error {
	if len(dst) != o.dim || len(v) != o.dim {
		return fmt.Errorf("%w: operator dim %d, len(dst)=%d, len(v)=%d", hvp.ErrDim, o.dim, len(dst), len(v))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.hvpExec == nil {
		e, err := context.NewExec(o.backend, o.ctx, o.hvpGraph)
		if err != nil {
			return fmt.Errorf("gomlx: HVP graph: %w", err)
		}
		o.hvpExec = e
	}
	if _, err := run(o.hvpExec, o.probeArgs(o.vector(v)), dst); err != nil {
		return fmt.Errorf("gomlx: HVP: %w", err)
	}
	return nil
}

// Gradient writes the gradient of the probe loss at the frozen parameters
// into dst and returns the loss.
func (o *Operator) Gradient(dst []float64) (float64, error) {
	if len(dst) != o.dim {
		return 0, fmt.Errorf("%w: operator dim %d, len(dst)=%d", hvp.ErrDim, o.dim, len(dst))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.gradExec == nil {
		e, err := context.NewExec(o.backend, o.ctx, o.gradGraph)
		if err != nil {
			return 0, fmt.Errorf("gomlx: gradient graph: %w", err)
		}
		o.gradExec = e
	}
	s, err := run(o.gradExec, o.probeArgs(), nil, dst)
	if err != nil {
		return 0, fmt.Errorf("gomlx: gradient: %w", err)
	}
	return s[0], nil
}

// Loss is the loss on the probe batch at the frozen parameters (NaN if it
// could not be computed). It is computed on first use after New or Refresh.
func (o *Operator) Loss() float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lossValid {
		return o.loss
	}
	l, _ := o.evalLoss()
	return l
}

// Params writes the frozen parameters into dst (length Dim).
func (o *Operator) Params(dst []float64) error {
	if len(dst) != o.dim {
		return fmt.Errorf("%w: operator dim %d, len(dst)=%d", hvp.ErrDim, o.dim, len(dst))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, v := range o.params {
		b := o.blocks[i]
		if err := copyOut(dst[b.Offset:b.Offset+b.Len], v); err != nil {
			return err
		}
	}
	return nil
}

// SetParams overwrites the frozen parameters from src (length Dim), for
// finite-difference checks and for loading weights from elsewhere.
func (o *Operator) SetParams(src []float64) error {
	if len(src) != o.dim {
		return fmt.Errorf("%w: operator dim %d, len(src)=%d", hvp.ErrDim, o.dim, len(src))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, v := range o.params {
		b := o.blocks[i]
		var t *tensors.Tensor
		part := src[b.Offset : b.Offset+b.Len]
		dims := v.Shape().Dimensions
		switch o.dtype {
		case dtypes.Float32:
			f := make([]float32, len(part))
			for j, x := range part {
				f[j] = float32(x)
			}
			t = tensors.FromFlatDataAndDimensions(f, dims...)
		case dtypes.Float64:
			t = tensors.FromFlatDataAndDimensions(append([]float64(nil), part...), dims...)
		default:
			return fmt.Errorf("gomlx: variables of dtype %s are not supported", o.dtype)
		}
		if err := v.SetValue(t); err != nil {
			return fmt.Errorf("gomlx: setting %s: %w", v.ScopeAndName(), err)
		}
	}
	o.lossValid = false
	return nil
}

func copyOut(dst []float64, v *context.Variable) error {
	t, err := v.Value()
	if err != nil {
		return fmt.Errorf("gomlx: reading %s: %w", v.ScopeAndName(), err)
	}
	return tryCatch(func() {
		t.MustConstFlatData(func(flat any) {
			switch f := flat.(type) {
			case []float64:
				copy(dst, f)
			case []float32:
				for i, x := range f {
					dst[i] = float64(x)
				}
			default:
				panicf("gomlx: %s has unsupported dtype %s", v.ScopeAndName(), t.DType())
			}
		})
	})
}

// Refresh copies the current values of the variables the loss uses from
// live (the training context) into the frozen copy. Nothing recompiles.
// Call it on the training goroutine between steps: it reads live.
func (o *Operator) Refresh(live *context.Context) error {
	// Copy out of live first, without holding the lock for long.
	vals := make([]*tensors.Tensor, len(o.used))
	for i, v := range o.used {
		lv := live.GetVariableByScopeAndName(v.Scope(), v.Name())
		if lv == nil {
			return fmt.Errorf("gomlx: Refresh: variable %s not in the live context", v.ScopeAndName())
		}
		t, err := lv.Value()
		if err != nil {
			return fmt.Errorf("gomlx: Refresh: reading %s: %w", v.ScopeAndName(), err)
		}
		if !t.Shape().Equal(v.Shape()) {
			return fmt.Errorf("gomlx: Refresh: %s changed shape from %s to %s", v.ScopeAndName(), v.Shape(), t.Shape())
		}
		if vals[i], err = t.LocalClone(); err != nil {
			return fmt.Errorf("gomlx: Refresh: copying %s: %w", v.ScopeAndName(), err)
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, v := range o.used {
		if err := v.SetValue(vals[i]); err != nil {
			return fmt.Errorf("gomlx: Refresh: setting %s: %w", v.ScopeAndName(), err)
		}
	}
	o.lossValid = false
	return nil
}

// Finalize releases the compiled graphs, the frozen variables and, if New
// created it, the backend. The Operator is unusable afterwards.
func (o *Operator) Finalize() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range []*context.Exec{o.lossExec, o.gradExec, o.hvpExec} {
		if e != nil {
			e.Finalize()
		}
	}
	o.lossExec, o.gradExec, o.hvpExec = nil, nil, nil
	o.ctx.Finalize()
	if o.own {
		o.backend.Finalize()
	}
}

// tryCatch runs fn and turns a panic (GoMLX reports graph-building and
// execution errors by panicking) into an error.
func tryCatch(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			switch e := r.(type) {
			case error:
				err = e
			default:
				err = fmt.Errorf("%v", e)
			}
		}
	}()
	fn()
	return nil
}

func panicf(format string, args ...any) { panic(fmt.Errorf(format, args...)) }
