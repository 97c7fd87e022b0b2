package estimators

import (
	"context"
	"runtime"
	"testing"

	"github.com/hessmon/hessmon/internal/krylov"
)

// diagOp is H = diag(d): products cost O(n) and allocate nothing, so what a
// call allocates is the estimator's.
type diagOp []float64

func (d diagOp) Dim() int { return len(d) }
func (d diagOp) Apply(dst, v []float64) error {
	for i, x := range v {
		dst[i] = d[i] * x
	}
	return nil
}

func newDiag(n int) diagOp {
	d := make(diagOp, n)
	for i := range d {
		d[i] = 1 / float64(1+i%997) // a spread spectrum with a clear top
	}
	d[0], d[1], d[2] = 40, 30, 20
	return d
}

// allocatedVectors returns the n-vectors' worth of bytes f allocates.
func allocatedVectors(n int, f func()) float64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return float64(b.TotalAlloc-a.TotalAlloc) / float64(8*n)
}

// TestVectorsBound: the documented formulas bound what each estimator
// allocates in n-vectors (garbage included), on the monitor's pipeline:
// ESD with its basis kept, the eigen solve started from it, the trace
// deflated by the eigen solve's basis. The slack of 1 covers the O(k²) and
// O(steps²) work, which is far below one vector at this n.
func TestVectorsBound(t *testing.T) {
	ctx := context.Background()
	const n = 200_000
	op := newDiag(n)
	eo := ESDOptions{Probes: 1, Steps: 30, Seed: 1, KeepBasis: true}
	var esd ESDResult
	got := allocatedVectors(n, func() {
		var err error
		esd, _, err = ESD(ctx, op, eo, nil)
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("ESD: %.1f allocated", got)
	if got > float64(eo.Vectors())+1 {
		t.Errorf("ESD allocated %.1f n-vectors, formula %d", got, eo.Vectors())
	}
	opt := EigenOptions{K: 5, Tol: 1e-6, MaxHVPs: 400, KeepVectors: true, KeepProducts: true, KeepBasis: true,
		Start: &krylov.Start{Basis: esd.Basis, Products: esd.Products, Orthonormal: true}}
	var eig EigenResult
	got = allocatedVectors(n, func() {
		var err error
		eig, _, err = TopEigen(ctx, op, opt, nil)
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("TopEigen from the ESD basis: %.1f allocated", got)
	if got > float64(opt.Vectors())+1 {
		t.Errorf("TopEigen allocated %.1f n-vectors, formula %d", got, opt.Vectors())
	}
	// Cold, Krylov–Schur.
	cold := EigenOptions{K: 5, Tol: 1e-6, MaxHVPs: 400, KeepVectors: true, KeepProducts: true}
	got = allocatedVectors(n, func() {
		if _, _, err := TopEigen(ctx, op, cold, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("cold TopEigen: %.1f allocated", got)
	if got > float64(cold.Vectors())+1 {
		t.Errorf("cold TopEigen allocated %.1f n-vectors, formula %d", got, cold.Vectors())
	}
	to := TraceOptions{RelTol: 0.05, MaxHVPs: 40, Seed: 2, Deflate: eig.Basis, DeflateProducts: eig.BasisProducts, DeflateOrthonormal: true,
		Blocks: []Block{{Name: "a", Offset: 0, Len: n / 2}, {Name: "b", Offset: n / 2, Len: n - n/2}}}
	got = allocatedVectors(n, func() {
		if _, _, err := Trace(ctx, op, to, nil); err != nil {
			t.Fatal(err)
		}
	})
	if got > float64(to.Vectors(n))+1 {
		t.Errorf("Trace allocated %.1f n-vectors, formula %d", got, to.Vectors(n))
	}
	t.Logf("trace: %.1f allocated; formulas: ESD %d, eigen from its basis %d, cold eigen %d, trace %d", got, eo.Vectors(), opt.Vectors(), cold.Vectors(), to.Vectors(n))
}
