package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/gonum/floats"

	"github.com/hessmon/hessmon/data"
)

// TestGemmTiles checks the tiled serial path and the goroutine split
// against one blas64.Gemm call for every transpose combination and shapes
// that cut tiles unevenly (tall and wide, so both split directions run).
func TestGemmTiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randm := func(r, c int) blas64.General {
		g := blas64.General{Rows: r, Cols: c, Stride: c, Data: make([]float64, r*c)}
		for i := range g.Data {
			g.Data[i] = rng.NormFloat64()
		}
		return g
	}
	for _, sz := range [][3]int{{1, 1, 1}, {63, 191, 5}, {64, 192, 7}, {130, 400, 33}, {200, 97, 129}, {33, 17, 40}} {
		m, n, k := sz[0], sz[1], sz[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				a := randm(m, k)
				if tA {
					a = randm(k, m)
				}
				b := randm(k, n)
				if tB {
					b = randm(n, k)
				}
				c := randm(m, n)
				want := blas64.General{Rows: m, Cols: n, Stride: n, Data: append([]float64(nil), c.Data...)}
				ta, tb := blas.NoTrans, blas.NoTrans
				if tA {
					ta = blas.Trans
				}
				if tB {
					tb = blas.Trans
				}
				blas64.Gemm(ta, tb, 0.7, a, b, 0.3, want)
				c2 := blas64.General{Rows: m, Cols: n, Stride: n, Data: append([]float64(nil), c.Data...)}
				gemm(tA, tB, 0.7, a, b, 0.3, c)
				splitGemm(ta, tb, 0.7, a, b, 0.3, c2)
				for i := range c.Data {
					if d := math.Abs(c.Data[i] - want.Data[i]); d > 1e-12*(1+math.Abs(want.Data[i])) {
						t.Fatalf("m=%d n=%d k=%d tA=%v tB=%v: entry %d is %v, want %v", m, n, k, tA, tB, i, c.Data[i], want.Data[i])
					}
					if d := math.Abs(c2.Data[i] - want.Data[i]); d > 1e-12*(1+math.Abs(want.Data[i])) {
						t.Fatalf("splitGemm m=%d n=%d k=%d tA=%v tB=%v: entry %d is %v, want %v", m, n, k, tA, tB, i, c2.Data[i], want.Data[i])
					}
				}
			}
		}
	}
}

// BenchmarkGemm compares gemm (serial tiles below serialGemmBelow) with a
// single blas64.Gemm call on the MLP's weight-gradient shapes.
func BenchmarkGemm(b *testing.B) {
	for _, rows := range []int{64, 128, 1000} {
		x := blas64.General{Rows: rows, Cols: 784, Stride: 784, Data: make([]float64, rows*784)}
		g := blas64.General{Rows: rows, Cols: 128, Stride: 128, Data: make([]float64, rows*128)}
		w := blas64.General{Rows: 128, Cols: 784, Stride: 784, Data: make([]float64, 128*784)}
		for i := range x.Data {
			x.Data[i] = float64(i%7) - 3
		}
		for i := range g.Data {
			g.Data[i] = float64(i%5) - 2
		}
		b.Run(fmt.Sprintf("gemm/rows=%d", rows), func(b *testing.B) {
			for b.Loop() {
				gemm(true, false, 1, g, x, 0, w)
			}
		})
		b.Run(fmt.Sprintf("blas64/rows=%d", rows), func(b *testing.B) {
			for b.Loop() {
				blas64.Gemm(blas.Trans, blas.NoTrans, 1, g, x, 0, w)
			}
		})
	}
}

// TestHVPReusesGradientBackward: the R-backward keeps gy·W and σ'(x)·gy
// from the first HVP after a forward pass. Interleaving HVPs, gradients and
// forward passes on other batches must give what a fresh tape gives.
func TestHVPReusesGradientBackward(t *testing.T) {
	cases, err := StandardChecks(5)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		n := c.Net.Dim()
		v1, v2 := make([]float64, n), make([]float64, n)
		for i := range v1 {
			v1[i], v2[i] = math.Cos(float64(i)), math.Sin(float64(3*i)+1)
		}
		half := c.Batch.Len() / 2
		other := Batch{X: &Tensor{N: half, Shape: c.Batch.X.Shape, Data: c.Batch.X.Data[:half*c.Batch.X.Shape.Size()]}, Labels: c.Batch.Labels[:half]}
		fresh := func(b Batch, v []float64) []float64 {
			tp := c.Net.NewTape()
			if _, err := tp.Forward(b, CrossEntropy{}, c.Mode); err != nil {
				t.Fatal(err)
			}
			hv := make([]float64, n)
			if err := tp.HVP(hv, v); err != nil {
				t.Fatal(err)
			}
			return hv
		}
		tp := c.Net.NewTape()
		hv, g := make([]float64, n), make([]float64, n)
		check := func(step string, b Batch, v []float64) {
			t.Helper()
			if err := tp.HVP(hv, v); err != nil {
				t.Fatal(err)
			}
			if r := relErr(hv, fresh(b, v)); !(r <= 1e-14) {
				t.Errorf("%s, %s: HVP differs from a fresh tape's by %.3g", c.Name, step, r)
			}
		}
		if _, err := tp.Forward(c.Batch, CrossEntropy{}, c.Mode); err != nil {
			t.Fatal(err)
		}
		check("first HVP", c.Batch, v1)
		check("second HVP", c.Batch, v2)
		if _, err := tp.Forward(other, CrossEntropy{}, c.Mode); err != nil {
			t.Fatal(err)
		}
		check("after a forward pass on another batch", other, v1)
		if _, err := tp.Grad(g, c.Batch, CrossEntropy{}, c.Mode); err != nil {
			t.Fatal(err)
		}
		check("after Grad", c.Batch, v2)
		check("again", c.Batch, v1)
	}
}

// recordingBLAS records the shape of every Dgemm call.
type recordingBLAS struct {
	gonum.Implementation
	calls *[]GEMM
}

func (r recordingBLAS) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	*r.calls = append(*r.calls, GEMM{TransA: tA == blas.Trans, TransB: tB == blas.Trans, M: m, N: n, K: k})
	r.Implementation.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// TestHVPGEMMsMatchCalls: the list bench hvp times (and GEMMFlops counts)
// is the list of products an HVP really issues, up to order.
func TestHVPGEMMsMatchCalls(t *testing.T) {
	tape, _, v, hv := benchMLP(t, 50)
	BLAS()
	prev := blas64.Implementation()
	defer blas64.Use(prev)
	var calls []GEMM
	blas64.Use(recordingBLAS{calls: &calls})
	if err := tape.HVP(hv, v); err != nil { // first HVP: also gy·W once
		t.Fatal(err)
	}
	calls = calls[:0]
	if err := tape.HVP(hv, v); err != nil {
		t.Fatal(err)
	}
	key := func(a, b GEMM) int { return cmpGEMM(a, b) }
	want := tape.Network().HVPGEMMs(50)
	slices.SortFunc(calls, key)
	slices.SortFunc(want, key)
	if !slices.Equal(calls, want) {
		t.Errorf("HVP issues %v\nHVPGEMMs lists %v", calls, want)
	}
}

func cmpGEMM(a, b GEMM) int {
	for _, d := range [][2]int{{a.M, b.M}, {a.N, b.N}, {a.K, b.K}, {boolInt(a.TransA), boolInt(b.TransA)}, {boolInt(a.TransB), boolInt(b.TransB)}} {
		if d[0] != d[1] {
			return d[0] - d[1]
		}
	}
	return 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestHasNonFinite covers NaN, both infinities, and a finite vector whose
// squared norm overflows (the dot product's false alarm).
func TestHasNonFinite(t *testing.T) {
	for _, c := range []struct {
		x    []float64
		want bool
	}{
		{nil, false},
		{[]float64{1, 2, 3}, false},
		{[]float64{1, math.NaN(), 3}, true},
		{[]float64{math.Inf(1), 0}, true},
		{[]float64{0, math.Inf(-1)}, true},
		{[]float64{1e200, -1e200, 5}, false},
	} {
		x := append(make([]float64, 5000), c.x...) // long enough for the library path
		if got := hasNonFinite(x); got != c.want {
			t.Errorf("hasNonFinite(%v) = %v, want %v", c.x, got, c.want)
		}
	}
}

// zeroColumns zeroes every second input feature below 300 of the batch,
// as MNIST's border pixels are, and returns the feature indices.
func zeroColumns(b Batch) []int {
	var cols []int
	for j := 0; j < 300; j += 2 {
		cols = append(cols, j)
	}
	c := b.X.C
	for i := 0; i < b.X.N; i++ {
		for _, j := range cols {
			b.X.Data[i*c+j] = 0
		}
	}
	return cols
}

// TestHVPSkipsZeroInputColumns: on a batch whose input has all-zero
// columns, the HVP (which then drops them from its products with x) equals
// the HVP of the same batch with those columns made nonzero by 1e-200 in
// one sample (which runs the full products), and the list of products it
// issues is Tape.HVPGEMMs's, narrowed to the used columns.
func TestHVPSkipsZeroInputColumns(t *testing.T) {
	for _, act := range []Activation{Tanh, ReLU} {
		net, err := NewMLP(MLPConfig{Sizes: []int{784, 32, 16, 10}, Activation: act}, 3)
		if err != nil {
			t.Fatal(err)
		}
		b := HeadBatch(data.Synthetic(40, Shape{H: 1, W: 1, C: 784}, 10, 5), 40)
		cols := zeroColumns(b)
		dense := Batch{X: &Tensor{N: b.X.N, Shape: b.X.Shape, Data: slices.Clone(b.X.Data)}, Labels: b.Labels, Targets: b.Targets}
		for _, j := range cols {
			dense.X.Data[7*784+j] = 1e-200
		}
		n := net.Dim()
		v := make([]float64, n)
		for i := range v {
			v[i] = math.Sin(float64(i)*0.37) + 0.1
		}
		hv := func(bt Batch) ([]float64, []GEMM) {
			tape := net.NewTape()
			if _, err := tape.Forward(bt, CrossEntropy{}, ModeEval); err != nil {
				t.Fatal(err)
			}
			out := make([]float64, n)
			if err := tape.HVP(out, v); err != nil {
				t.Fatal(err)
			}
			list, err := tape.HVPGEMMs()
			if err != nil {
				t.Fatal(err)
			}
			return out, list
		}
		got, packedList := hv(b)
		want, denseList := hv(dense)
		diff := make([]float64, n)
		floats.SubTo(diff, got, want)
		if rel := floats.Norm(diff, 2) / floats.Norm(want, 2); !(rel <= 1e-13) {
			t.Errorf("%v: packed HVP differs from the full one by %.3g relative", act, rel)
		}
		if first := packedList[0]; first.K != 784-len(cols) {
			t.Errorf("%v: first product %+v, want K = %d used columns", act, first, 784-len(cols))
		}
		if first := denseList[0]; first.K != 784 {
			t.Errorf("%v: full batch's first product %+v, want K = 784", act, first)
		}
		// The products really issued.
		BLAS()
		prev := blas64.Implementation()
		var calls []GEMM
		blas64.Use(recordingBLAS{calls: &calls})
		tape := net.NewTape()
		_, err = tape.Forward(b, CrossEntropy{}, ModeEval)
		if err == nil {
			err = tape.HVP(make([]float64, n), v)
		}
		calls = calls[:0]
		if err == nil {
			err = tape.HVP(make([]float64, n), v)
		}
		blas64.Use(prev)
		if err != nil {
			t.Fatal(err)
		}
		key := func(a, b GEMM) int { return cmpGEMM(a, b) }
		slices.SortFunc(calls, key)
		slices.SortFunc(packedList, key)
		if !slices.Equal(calls, packedList) {
			t.Errorf("%v: HVP issues %v\nTape.HVPGEMMs lists %v", act, calls, packedList)
		}
	}
}
