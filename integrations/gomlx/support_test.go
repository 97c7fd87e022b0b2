package gomlx

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/layers/batchnorm"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/losses"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
)

// What GoMLX v0.26.0 on simplego can and cannot give a Hessian for. Each
// case is a small model with one op between two dense layers; the stage
// is where it stops: "train" (no first-order gradient: training itself
// fails), "hvp" (gradient fine, grad of grad fails), "fd" (HVP runs but
// disagrees with central differences), or "ok". The expectations are
// what was measured; a newer GoMLX that fixes an op fails this test, which
// is the cue to update docs/gomlx.md.
func TestSupportMatrix(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	flat := tensors.FromFlatDataAndDimensions(randFloats(r, tB*8), tB, 8)
	img := tensors.FromFlatDataAndDimensions(randFloats(r, tB*4*4*1), tB, 4, 4, 1)
	labels := classLabels(r, tB)
	dense := func(ctx *context.Context, name string, x *graph.Node, n int) *graph.Node {
		return layers.DenseWithBias(ctx.In(name), x, n)
	}
	mid := func(op func(ctx *context.Context, h *graph.Node) *graph.Node) train.ModelFn {
		return func(ctx *context.Context, _ any, in []*graph.Node) []*graph.Node {
			h := graph.Tanh(dense(ctx, "h1", in[0], 6))
			h = op(ctx, h)
			return []*graph.Node{dense(ctx, "out", h, tClasses)}
		}
	}
	image := func(op func(ctx *context.Context, x *graph.Node) *graph.Node) train.ModelFn {
		return func(ctx *context.Context, _ any, in []*graph.Node) []*graph.Node {
			// A per-pixel dense layer first, so that the op sits between
			// parameters and the HVP must differentiate through it twice.
			h := graph.Tanh(dense(ctx, "pix", in[0], 2))
			h = op(ctx, h)
			h = graph.Reshape(h, h.Shape().Dimensions[0], -1)
			return []*graph.Node{dense(ctx, "out", h, tClasses)}
		}
	}
	conv := func(ctx *context.Context, x *graph.Node) *graph.Node {
		return layers.Convolution(ctx.In("conv"), x).Filters(2).KernelSize(2).Done()
	}
	cases := []struct {
		name  string
		model train.ModelFn
		input *tensors.Tensor
		want  string
	}{
		{"tanh (reference)", mid(func(_ *context.Context, h *graph.Node) *graph.Node { return h }), flat, "ok"},
		{"Slice", mid(func(_ *context.Context, h *graph.Node) *graph.Node {
			return graph.Slice(h, graph.AxisRange(), graph.AxisRange(0, 4))
		}), flat, "train"},
		{"Concatenate", mid(func(_ *context.Context, h *graph.Node) *graph.Node {
			return graph.Concatenate([]*graph.Node{h, graph.Tanh(h)}, -1)
		}), flat, "hvp"},
		{"Sqrt", mid(func(_ *context.Context, h *graph.Node) *graph.Node {
			return graph.Sqrt(graph.AddScalar(graph.Square(h), 1))
		}), flat, "ok"},
		{"Rsqrt", mid(func(_ *context.Context, h *graph.Node) *graph.Node {
			return graph.Rsqrt(graph.AddScalar(graph.Square(h), 1))
		}), flat, "train"},
		{"Expm1", mid(func(_ *context.Context, h *graph.Node) *graph.Node { return graph.Expm1(h) }), flat, "train"},
		{"ClipScalar", mid(func(_ *context.Context, h *graph.Node) *graph.Node { return graph.ClipScalar(h, -0.5, 0.5) }), flat, "ok"},
		{"Clip (Clamp)", mid(func(_ *context.Context, h *graph.Node) *graph.Node {
			g := h.Graph()
			return graph.Clip(h, graph.Scalar(g, h.DType(), -0.5), graph.Scalar(g, h.DType(), 0.5))
		}), flat, "train"},
		{"ReduceMultiply", mid(func(_ *context.Context, h *graph.Node) *graph.Node {
			return graph.Concatenate([]*graph.Node{h, graph.InsertAxes(graph.ReduceMultiply(h, -1), -1)}, -1)
		}), flat, "train"},
		{"Convolution", image(conv), img, "train"},
		{"MaxPool", image(func(_ *context.Context, x *graph.Node) *graph.Node { return graph.MaxPool(x).Window(2).Done() }), img, "train"},
		{"MeanPool", image(func(_ *context.Context, x *graph.Node) *graph.Node { return graph.MeanPool(x).Window(2).Done() }), img, "train"},
		{"BatchNorm (default)", mid(func(ctx *context.Context, h *graph.Node) *graph.Node {
			return batchnorm.New(ctx.In("bn"), h, -1).Done()
		}), flat, "train"},
		{"BatchNorm UseBackendInference(false)", mid(func(ctx *context.Context, h *graph.Node) *graph.Node {
			return batchnorm.New(ctx.In("bn"), h, -1).UseBackendInference(false).Done()
		}), flat, "ok"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stage, detail := probeSupport(t, c.model, c.input, labels)
			if stage != c.want {
				t.Errorf("stage %q (%s), documented %q", stage, detail, c.want)
			} else {
				t.Logf("%s: %s", stage, detail)
			}
		})
	}
}

// probeSupport trains one step, builds the Operator and checks one HVP
// against central differences; it reports where that stopped.
func probeSupport(t *testing.T, model train.ModelFn, x, y *tensors.Tensor) (stage, detail string) {
	t.Helper()
	b := newBackend(t)
	// Fresh copies: a tensor used on a backend dies with that backend.
	x, err := x.LocalClone()
	must(t, err)
	y, err = y.LocalClone()
	must(t, err)
	ctx := context.New()
	loss := losses.SparseCategoricalCrossEntropyLogits
	err = tryCatch(func() {
		tr := train.NewTrainer(b, ctx, model, loss, optimizers.StochasticGradientDescent().Done(), nil, nil)
		_, err = tr.TrainStep(nil, []*tensors.Tensor{x}, []*tensors.Tensor{y})
		if err != nil {
			panic(err)
		}
	})
	if err != nil {
		return "train", firstLine(err.Error())
	}
	op, err := New(ctx, Config{Model: model, Loss: loss, Inputs: []*tensors.Tensor{x}, Labels: []*tensors.Tensor{y}})
	if err != nil {
		return "train", firstLine(err.Error())
	}
	defer op.Finalize()
	n := op.Dim()
	v := randFloats(rand.New(rand.NewPCG(2, 2)), n)
	hv := make([]float64, n)
	if err := op.Apply(hv, v); err != nil {
		return "hvp", firstLine(err.Error())
	}
	theta := make([]float64, n)
	must(t, op.Params(theta))
	const eps = 1e-5
	gp, gm, sh := make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range sh {
		sh[i] = theta[i] + eps*v[i]
	}
	must(t, op.SetParams(sh))
	if _, err := op.Gradient(gp); err != nil {
		return "train", firstLine(err.Error())
	}
	for i := range sh {
		sh[i] = theta[i] - eps*v[i]
	}
	must(t, op.SetParams(sh))
	if _, err := op.Gradient(gm); err != nil {
		return "train", firstLine(err.Error())
	}
	fd := make([]float64, n)
	for i := range fd {
		fd[i] = (gp[i] - gm[i]) / (2 * eps)
	}
	if d := relDiff(hv, fd); d > 1e-6 {
		return "fd", "‖Hv−FD‖/‖FD‖ = " + fmtG(d)
	}
	return "ok", "‖Hv−FD‖/‖FD‖ = " + fmtG(relDiff(hv, fd))
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			s = s[:i]
			break
		}
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

func fmtG(x float64) string { return strconv.FormatFloat(x, 'g', 2, 64) }
