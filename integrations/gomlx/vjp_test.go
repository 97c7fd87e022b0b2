package gomlx

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

// dotCases are DotGeneral layouts: batch axes not leading, several
// contracting axes in non-sorted order, no cross axes, outer products.
var dotCases = []struct {
	name           string
	lhs, rhs       []int
	lc, lb, rc, rb []int
}{
	{"matmul", []int{3, 4}, []int{4, 5}, []int{1}, nil, []int{0}, nil},
	{"matmul-transposed", []int{4, 3}, []int{5, 4}, []int{0}, nil, []int{1}, nil},
	{"square-ambiguous", []int{4, 4}, []int{4, 4}, []int{1}, nil, []int{1}, nil},
	{"batched-attention", []int{2, 3, 5, 4}, []int{2, 3, 6, 4}, []int{3}, []int{0, 1}, []int{3}, []int{0, 1}},
	{"batch-not-leading", []int{5, 2, 3}, []int{3, 2, 4}, []int{2}, []int{1}, []int{0}, []int{1}},
	{"two-contracting-swapped", []int{3, 4, 5}, []int{5, 2, 4}, []int{1, 2}, nil, []int{2, 0}, nil},
	{"outer", []int{3}, []int{4}, nil, nil, nil, nil},
	{"full-contraction", []int{3, 4}, []int{3, 4}, []int{0, 1}, nil, []int{0, 1}, nil},
}

// TestDotGeneralAxesRead: the reflect read returns the axes the node was
// built with, so the fast VJP is really used (a silent fallback would keep
// TestFastVJPMatchesStock green).
func TestDotGeneralAxesRead(t *testing.T) {
	g := graph.NewGraph(newBackend(t), "axes")
	defer g.Finalize()
	for _, c := range dotCases {
		lhs := graph.Parameter(g, "l"+c.name, shapes.Make(dtypes.Float64, c.lhs...))
		rhs := graph.Parameter(g, "r"+c.name, shapes.Make(dtypes.Float64, c.rhs...))
		n := graph.DotGeneral(lhs, c.lc, c.lb, rhs, c.rc, c.rb)
		ax, ok := readDotGeneralAxes(n)
		if !ok {
			t.Errorf("%s: axes not readable", c.name)
			continue
		}
		eq := func(a, b []int) bool { return slices.Equal(a, b) || len(a) == 0 && len(b) == 0 }
		if !eq(ax.lhsContract, c.lc) || !eq(ax.lhsBatch, c.lb) || !eq(ax.rhsContract, c.rc) || !eq(ax.rhsBatch, c.rb) {
			t.Errorf("%s: read %+v", c.name, ax)
		}
	}
	// A node of another type is refused.
	x := graph.Parameter(g, "x", shapes.Make(dtypes.Float64, 2))
	if _, ok := readDotGeneralAxes(graph.Neg(x)); ok {
		t.Error("a Neg node read as DotGeneral")
	}
}

// TestDotGeneralVJPLayouts compares, for every layout, the gradient of
// Σ w ⊙ DotGeneral(a, b) built with the fast VJP against GoMLX's own rule.
func TestDotGeneralVJPLayouts(t *testing.T) {
	backend := newBackend(t)
	r := rand.New(rand.NewPCG(4, 4))
	for _, c := range dotCases {
		a := tensors.FromFlatDataAndDimensions(randFloats(r, prod(c.lhs)), c.lhs...)
		b := tensors.FromFlatDataAndDimensions(randFloats(r, prod(c.rhs)), c.rhs...)
		grads := func() [][]float64 {
			e := graph.MustNewExec(backend, func(a, b *graph.Node) []*graph.Node {
				y := graph.DotGeneral(a, c.lc, c.lb, b, c.rc, c.rb)
				w := graph.ScalarOne(y.Graph(), y.DType())
				if y.Rank() > 0 {
					w = graph.Iota(y.Graph(), y.Shape(), 0)
				}
				loss := graph.ReduceAllSum(graph.Mul(graph.Sin(y), graph.AddScalar(w, 1)))
				return graph.Gradient(loss, a, b)
			})
			defer e.Finalize()
			out := e.MustExec(a, b)
			var flat [][]float64
			for _, o := range out {
				flat = append(flat, tensors.MustCopyFlatData[float64](o))
			}
			return flat
		}
		fast := grads()
		graph.VJPRegistration[graph.NodeTypeDotGeneral] = stockDotGeneralVJP
		stock := grads()
		UseFastVJPs()
		for i := range fast {
			if d := relDiff(fast[i], stock[i]); d > 1e-13 {
				t.Errorf("%s: operand %d gradient differs from GoMLX's by %.2g", c.name, i, d)
			}
		}
	}
}

func prod(d []int) int {
	p := 1
	for _, x := range d {
		p *= x
	}
	return p
}
