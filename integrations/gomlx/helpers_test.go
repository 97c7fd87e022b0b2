package gomlx

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"
	"github.com/gomlx/gomlx/pkg/ml/layers/regularizers"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/losses"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
)

// testModel is a small float64 GoMLX model with data, for the truth tests.
type testModel struct {
	name   string
	model  train.ModelFn
	loss   train.LossFn
	inputs []*tensors.Tensor
	labels []*tensors.Tensor
	setup  func(ctx *context.Context) // hyperparameters, e.g. regularisation
}

const (
	tB       = 6 // batch
	tIn      = 5 // features
	tClasses = 3
	tT       = 4 // sequence length
	tVocab   = 7
)

func randFloats(r *rand.Rand, n int) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	return x
}

func classLabels(r *rand.Rand, n int) *tensors.Tensor {
	l := make([]int32, n)
	for i := range l {
		l[i] = int32(r.IntN(tClasses))
	}
	return tensors.FromFlatDataAndDimensions(l, n, 1)
}

func denseModel(act activations.Type) train.ModelFn {
	return func(ctx *context.Context, _ any, in []*graph.Node) []*graph.Node {
		x := layers.DenseWithBias(ctx.In("h1"), in[0], 4)
		x = activations.Apply(act, x)
		return []*graph.Node{layers.DenseWithBias(ctx.In("out"), x, tClasses)}
	}
}

// testModels covers every layer kind the package supports.
func testModels() []testModel {
	r := rand.New(rand.NewPCG(1, 2))
	flat := func() []*tensors.Tensor {
		return []*tensors.Tensor{tensors.FromFlatDataAndDimensions(randFloats(r, tB*tIn), tB, tIn)}
	}
	ce := losses.SparseCategoricalCrossEntropyLogits
	ms := []testModel{
		{name: "dense-tanh", model: denseModel(activations.TypeTanh), loss: ce, inputs: flat(), labels: []*tensors.Tensor{classLabels(r, tB)}},
		{name: "dense-relu", model: denseModel(activations.TypeRelu), loss: ce, inputs: flat(), labels: []*tensors.Tensor{classLabels(r, tB)}},
		{name: "dense-gelu", model: denseModel(activations.TypeGelu), loss: ce, inputs: flat(), labels: []*tensors.Tensor{classLabels(r, tB)}},
		{name: "dense-l2", model: denseModel(activations.TypeTanh), loss: ce, inputs: flat(), labels: []*tensors.Tensor{classLabels(r, tB)},
			setup: func(ctx *context.Context) { ctx.SetParam(regularizers.ParamL2, 0.3) }},
		{name: "mse-sigmoid", model: denseModel(activations.TypeSigmoid), loss: losses.MeanSquaredError, inputs: flat(),
			labels: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(randFloats(r, tB*tClasses), tB, tClasses)}},
		{name: "layernorm", loss: ce, inputs: flat(), labels: []*tensors.Tensor{classLabels(r, tB)},
			model: func(ctx *context.Context, _ any, in []*graph.Node) []*graph.Node {
				x := layers.DenseWithBias(ctx.In("h1"), in[0], 4)
				x = layers.LayerNormalization(ctx.In("ln"), x, -1).Done()
				x = graph.Tanh(x)
				return []*graph.Node{layers.DenseWithBias(ctx.In("out"), x, tClasses)}
			}},
		{name: "attention", loss: ce, labels: []*tensors.Tensor{classLabels(r, tB)},
			inputs: []*tensors.Tensor{tensors.FromFlatDataAndDimensions(randFloats(r, tB*tT*tIn), tB, tT, tIn)},
			model: func(ctx *context.Context, _ any, in []*graph.Node) []*graph.Node {
				x := in[0]
				a := layers.MultiHeadAttention(ctx.In("mha"), x, x, x, 2, 3).UseCausalMask().Done()
				x = graph.Add(x, a)
				x = layers.DenseWithBias(ctx.In("mlp"), x, 4) // rank-3 Dense: Einsum → DotGeneral
				x = graph.ReduceMean(graph.Tanh(x), 1)
				return []*graph.Node{layers.DenseWithBias(ctx.In("out"), x, tClasses)}
			}},
		{name: "embedding", loss: ce, labels: []*tensors.Tensor{classLabels(r, tB)},
			inputs: func() []*tensors.Tensor {
				ids := make([]int32, tB*tT)
				for i := range ids {
					ids[i] = int32(r.IntN(tVocab))
				}
				return []*tensors.Tensor{tensors.FromFlatDataAndDimensions(ids, tB, tT)}
			}(),
			model: func(ctx *context.Context, _ any, in []*graph.Node) []*graph.Node {
				x := layers.Embedding(ctx.In("emb"), in[0], dtypes.Float64, tVocab, 4)
				x = graph.ReduceMean(graph.Tanh(x), 1)
				return []*graph.Node{layers.DenseWithBias(ctx.In("out"), x, tClasses)}
			}},
	}
	return ms
}

// newBackend is a simplego backend without the parallel-ops worker pool.
func newBackend(t testing.TB) backends.Backend {
	t.Helper()
	b, err := simplego.New("ops_sequential")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Finalize)
	return b
}

// trained makes a context whose variables exist: a trainer step at lr 0.05.
func (m testModel) trained(t testing.TB, backend backends.Backend, steps int) (*context.Context, *train.Trainer) {
	t.Helper()
	ctx := context.New()
	if err := ctx.SetRNGStateFromSeed(42); err != nil { // deterministic initialisation
		t.Fatal(err)
	}
	if m.setup != nil {
		m.setup(ctx)
	}
	tr := train.NewTrainer(backend, ctx, m.model, m.loss,
		optimizers.StochasticGradientDescent().WithLearningRate(0.05).Done(), nil, nil)
	for range steps {
		if _, err := tr.TrainStep(nil, m.inputs, m.labels); err != nil {
			t.Fatalf("%s: train step: %v", m.name, err)
		}
	}
	return ctx, tr
}

func (m testModel) operator(t testing.TB, ctx *context.Context) *Operator {
	t.Helper()
	op, err := New(ctx, Config{Model: m.model, Loss: m.loss, Inputs: m.inputs, Labels: m.labels})
	if err != nil {
		t.Fatalf("%s: New: %v", m.name, err)
	}
	t.Cleanup(op.Finalize)
	return op
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

func norm(a []float64) float64 { return math.Sqrt(dot(a, a)) }

func relDiff(a, b []float64) float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return norm(d) / math.Max(norm(b), 1e-300)
}
