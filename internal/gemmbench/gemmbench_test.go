package gemmbench

import (
	"context"
	"errors"
	"testing"

	"github.com/hessmon/hessmon/trainer"
)

func TestTimer(t *testing.T) {
	list := []trainer.GEMM{{M: 3, N: 4, K: 5}, {TransA: true, M: 2, N: 3, K: 7}, {TransB: true, M: 6, N: 2, K: 1}}
	tm := NewTimer(list)
	if want := 2.0 * (3*4*5 + 2*3*7 + 6*2*1); tm.Flops() != want {
		t.Errorf("Flops() = %v, want %v", tm.Flops(), want)
	}
	if _, err := tm.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Each product really ran: c = op(a)·op(b) (beta 0), checked naively.
	for i, g := range list {
		for r := range g.M {
			for col := range g.N {
				var want float64
				for k := range g.K {
					av, bv := tm.a[i][r*g.K+k], tm.b[i][k*g.N+col]
					if g.TransA {
						av = tm.a[i][k*g.M+r]
					}
					if g.TransB {
						bv = tm.b[i][col*g.K+k]
					}
					want += av * bv
				}
				if d := tm.c[i][r*g.N+col] - want; d > 1e-12 || d < -1e-12 {
					t.Fatalf("product %d: c[%d,%d] = %v, want %v", i, r, col, tm.c[i][r*g.N+col], want)
				}
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tm.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Run on a cancelled context: %v", err)
	}
}
