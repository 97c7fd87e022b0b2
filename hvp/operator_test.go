package hvp

import (
	"testing"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
)

func TestFiniteDiffOnQuadratic(t *testing.T) {
	// L = ½ xᵀAx has gradient Ax: the central difference is exact up to rounding.
	a := mat.NewSymDense(3, []float64{4, 1, 0, 1, 3, -1, 0, -1, 2})
	grad := func(dst, x []float64) error {
		mat.NewVecDense(3, dst).MulVec(a, mat.NewVecDense(3, x))
		return nil
	}
	fd := NewFiniteDiff(grad, []float64{1, 2, 3})
	if h := fd.StepSize(); h < 1e-6 || h > 1e-4 {
		t.Errorf("step %g outside the ε^(1/3)·scale rule's range", h)
	}
	dst := make([]float64, 3)
	if err := fd.Apply(dst, []float64{1, -1, 2}); err != nil {
		t.Fatal(err)
	}
	want := []float64{3, -4, 5}
	if !floats.EqualApprox(dst, want, 1e-9) {
		t.Errorf("FiniteDiff = %v, want %v", dst, want)
	}
	if err := fd.Apply(dst[:2], []float64{1, 2, 3}); err == nil {
		t.Error("wrong length accepted")
	}
}

func TestMeanValidation(t *testing.T) {
	d2 := NewDense(mat.NewSymDense(2, []float64{1, 0, 0, 1}))
	d3 := NewDense(mat.NewSymDense(3, nil))
	if _, err := NewMean(nil, nil); err == nil {
		t.Error("empty Mean accepted")
	}
	if _, err := NewMean([]Operator{d2, d3}, nil); err == nil {
		t.Error("mismatched dims accepted")
	}
	if _, err := NewMean([]Operator{d2}, []float64{-1}); err == nil {
		t.Error("negative weight accepted")
	}
	m, err := NewMean([]Operator{d2, NewDense(mat.NewSymDense(2, []float64{3, 0, 0, 3}))}, []float64{1, 3})
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float64, 2)
	_ = m.Apply(dst, []float64{1, 1})
	if !floats.EqualApprox(dst, []float64{2.5, 2.5}, 1e-15) {
		t.Errorf("weighted mean = %v, want 2.5", dst)
	}
}

// TestMeanWorkers checks that the result does not depend on how many
// operators run at once, including a change of SetWorkers between calls.
func TestMeanWorkers(t *testing.T) {
	const n = 7
	var ops []Operator
	var want [n]float64
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(i) - 2.5
	}
	for k := range 5 {
		d := make([]float64, n*n)
		for i := range n {
			for j := range n {
				d[i*n+j] = float64((i+1)*(j+1)%(k+3)) + float64(k)
			}
		}
		s := mat.NewSymDense(n, d)
		ops = append(ops, NewDense(s))
		var hv mat.VecDense
		hv.MulVec(s, mat.NewVecDense(n, v))
		for i := range want {
			want[i] += hv.AtVec(i) * float64(k+1) / 15
		}
	}
	m, err := NewMean(ops, []float64{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	var first []float64
	for _, w := range []int{1, 0, 2, 5, 1, 9} {
		m.SetWorkers(w)
		dst := make([]float64, n)
		if err := m.Apply(dst, v); err != nil {
			t.Fatal(err)
		}
		if !floats.EqualApprox(dst, want[:], 1e-12) {
			t.Fatalf("workers %d: %v, want %v", w, dst, want)
		}
		if first == nil {
			first = dst
		} else if !floats.Equal(dst, first) {
			t.Fatalf("workers %d: %v differs from workers 1: %v", w, dst, first)
		}
	}
}
