package estimators

import (
	"context"
	"runtime"
	"testing"
)

// liveOp samples the live heap, in n-vectors, at each product: the most
// the estimator holds at once between its products.
type liveOp struct {
	diagOp
	base uint64
	peak float64
}

func (o *liveOp) Apply(dst, v []float64) error {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	o.peak = max(o.peak, float64(m.HeapAlloc-min(m.HeapAlloc, o.base))/float64(8*len(o.diagOp)))
	return o.diagOp.Apply(dst, v)
}

// TestExtremesVectorsBound: ExtremesOptions.Vectors bounds the n-vectors
// Extremes holds at once, cold and warm, on a spectrum that makes it
// restart, and the formula is not loose by more than its restart and
// growth slack.
func TestExtremesVectorsBound(t *testing.T) {
	ctx := context.Background()
	const n = 200_000
	xo := ExtremesOptions{Tol: 1e-6, MaxHVPs: 120, Seed: 3}
	var warm *ExtremesWarm
	for _, name := range []string{"cold", "warm"} {
		op := &liveOp{diagOp: newDiag(n)}
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		op.base = m.HeapAlloc
		res, w, err := Extremes(ctx, op, xo, warm)
		if err != nil && w == nil {
			t.Fatal(err)
		}
		warm = w
		t.Logf("%s: %d HVPs, %d restarts, peak %.1f n-vectors held, formula %d", name, res.HVPs, res.Restarts, op.peak, xo.Vectors())
		if op.peak > float64(xo.Vectors())+1 {
			t.Errorf("%s Extremes held %.1f n-vectors, formula %d", name, op.peak, xo.Vectors())
		}
		if name == "cold" && op.peak < float64(xo.Vectors())/3 {
			t.Errorf("cold Extremes held %.1f n-vectors, formula %d is loose", op.peak, xo.Vectors())
		}
	}
}
