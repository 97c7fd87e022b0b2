package gomlx

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/losses"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// mlpModel is the GoMLX twin of trainer.NewMLP: fc1, fc2, … dense layers
// with bias and the activation between them.
func mlpModel(layersOut []int, act activations.Type) train.ModelFn {
	return func(ctx *mlctx.Context, _ any, in []*graph.Node) []*graph.Node {
		x := in[0]
		for i, n := range layersOut {
			x = layers.DenseWithBias(ctx.In(fmt.Sprintf("fc%d", i+1)), x, n)
			if i < len(layersOut)-1 {
				x = activations.Apply(act, x)
			}
		}
		return []*graph.Node{x}
	}
}

// twin is the same MLP, weights and batch in hessmon's trainer and in GoMLX.
type twin struct {
	net   *trainer.Network
	exact *hessian.Exact
	op    *Operator
}

// toGoMLX maps a vector in hessmon's layout (PyTorch: weight [out, in]) to
// the operator's (GoMLX: weights [in, out]); back does the inverse.
func (tw twin) toGoMLX(dst, src []float64, back bool) {
	blocks := tw.op.VariableBlocks()
	for i, p := range tw.net.ParamInfo() {
		b := blocks[i]
		if len(p.Shape) == 2 {
			out, in := p.Shape[0], p.Shape[1]
			for o := range out {
				for j := range in {
					h, g := p.Offset+o*in+j, b.Offset+j*out+o
					if back {
						dst[h] = src[g]
					} else {
						dst[g] = src[h]
					}
				}
			}
			continue
		}
		if back {
			copy(dst[p.Offset:p.Offset+p.Len], src[b.Offset:b.Offset+b.Len])
		} else {
			copy(dst[b.Offset:b.Offset+b.Len], src[p.Offset:p.Offset+p.Len])
		}
	}
}

// newTwin builds hessmon's MLP sizes[0]-…-sizes[last] with act, a batch of n
// synthetic samples, and the GoMLX model loaded with the same weights.
func newTwin(t testing.TB, sizes []int, act trainer.Activation, gact activations.Type, n int) twin {
	t.Helper()
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: sizes, Activation: act}, 7)
	if err != nil {
		t.Fatal(err)
	}
	ds := data.Synthetic(n, trainer.Shape{H: 1, W: 1, C: sizes[0]}, sizes[len(sizes)-1], 11)
	batch := trainer.HeadBatch(ds, n)
	exact, err := hessian.NewExact(net, batch, trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	labels := make([]int32, n)
	for i, l := range batch.Labels {
		labels[i] = int32(l)
	}
	inputs := []*tensors.Tensor{tensors.FromFlatDataAndDimensions(append([]float64(nil), batch.X.Data...), n, sizes[0])}
	lab := []*tensors.Tensor{tensors.FromFlatDataAndDimensions(labels, n, 1)}

	model := mlpModel(sizes[1:], gact)
	ctx := mlctx.New()
	backend := newBackend(t)
	tr := train.NewTrainer(backend, ctx, model, losses.SparseCategoricalCrossEntropyLogits,
		optimizers.StochasticGradientDescent().Done(), nil, nil)
	if _, err := tr.TrainStep(nil, inputs, lab); err != nil { // creates the variables
		t.Fatal(err)
	}
	op, err := New(ctx, Config{Model: model, Loss: losses.SparseCategoricalCrossEntropyLogits, Inputs: inputs, Labels: lab})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Finalize)
	if op.Dim() != net.Dim() {
		t.Fatalf("GoMLX MLP has %d parameters, hessmon's %d", op.Dim(), net.Dim())
	}
	tw := twin{net: net, exact: exact, op: op}
	theta := make([]float64, op.Dim())
	tw.toGoMLX(theta, net.Params(), false)
	if err := op.SetParams(theta); err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(op.Loss()-exact.Loss()) / exact.Loss(); d > 1e-13 {
		t.Fatalf("loss: GoMLX %.17g, hessmon %.17g (rel %.2g)", op.Loss(), exact.Loss(), d)
	}
	return tw
}

// gomlxInHessmonLayout is the GoMLX operator seen in hessmon's layout.
type gomlxInHessmonLayout struct{ tw twin }

func (g gomlxInHessmonLayout) Dim() int { return g.tw.op.Dim() }
func (g gomlxInHessmonLayout) Apply(dst, v []float64) error {
	n := g.Dim()
	gv, gd := make([]float64, n), make([]float64, n)
	g.tw.toGoMLX(gv, v, false)
	if err := g.tw.op.Apply(gd, gv); err != nil {
		return err
	}
	g.tw.toGoMLX(dst, gd, true)
	return nil
}

// TestCrossFrameworkMLP loads the same MLP weights into hessmon's trainer
// (R-op, hessian.Exact) and into GoMLX (grad of grad) and compares H·v and
// λ1..5.
func TestCrossFrameworkMLP(t *testing.T) {
	cases := []struct {
		name  string
		act   trainer.Activation
		gact  activations.Type
		sizes []int
	}{
		{"tanh", trainer.Tanh, activations.TypeTanh, []int{20, 12, 12, 4}},
		{"relu", trainer.ReLU, activations.TypeRelu, []int{20, 12, 12, 4}},
		{"gelu", trainer.GELU, activations.TypeGelu, []int{20, 12, 12, 4}},
	}
	if !testing.Short() {
		cases = append(cases, struct {
			name  string
			act   trainer.Activation
			gact  activations.Type
			sizes []int
		}{"tanh-784-128-128-10", trainer.Tanh, activations.TypeTanh, []int{784, 128, 128, 10}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tw := newTwin(t, c.sizes, c.act, c.gact, 64)
			g := gomlxInHessmonLayout{tw}
			n := g.Dim()
			r := rand.New(rand.NewPCG(8, 9))
			for trial := range 3 {
				v := randFloats(r, n)
				a, b := make([]float64, n), make([]float64, n)
				must(t, g.Apply(a, v))
				must(t, tw.exact.Apply(b, v))
				if d := relDiff(a, b); d > 1e-10 {
					t.Errorf("trial %d: ‖Hv_gomlx − Hv_hessmon‖/‖Hv_hessmon‖ = %.2g, want ≤ 1e-10", trial, d)
				} else if trial == 0 {
					t.Logf("dim %d: H·v relative difference %.2g", n, d)
				}
			}
			opt := estimators.EigenOptions{K: 5, Tol: 1e-10, MaxHVPs: 600, Seed: 1}
			ea, _, err := estimators.TopEigen(context.Background(), g, opt, nil)
			must(t, err)
			eb, _, err := estimators.TopEigen(context.Background(), tw.exact, opt, nil)
			must(t, err)
			for i := range 5 {
				if d := math.Abs(ea.Values[i]-eb.Values[i]) / math.Abs(eb.Values[0]); d > 1e-9 {
					t.Errorf("λ%d: GoMLX %.12g, hessmon %.12g (|Δ|/λ1 = %.2g)", i+1, ea.Values[i], eb.Values[i], d)
				}
			}
			t.Logf("λ1..5 GoMLX %.8g, hessmon %.8g", ea.Values, eb.Values)
		})
	}
}
