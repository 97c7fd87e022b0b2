package estimators

import (
	"context"
	"fmt"
	"math"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
)

// transformerBlocks are parameter blocks named as a two-layer transformer
// names them (the kinds of issue I: embedding, norm, attention QK and VO,
// MLP).
func transformerBlocks() []Block {
	names := []string{"embed.weight"}
	for l := range 2 {
		for _, s := range []string{"ln1.scale", "attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.o.weight", "ln2.scale", "mlp.fc1.weight", "mlp.fc2.weight"} {
			names = append(names, fmt.Sprintf("layers.%d.%s", l, s))
		}
	}
	names = append(names, "ln_f.scale", "head.weight")
	b := make([]Block, len(names))
	for i, n := range names {
		b[i] = Block{Name: n, Offset: 3 * i, Len: 3}
	}
	return b
}

func transformerRules(t testing.TB) []GroupRule {
	var rules []GroupRule
	for _, s := range []string{`attn_qk=attn\.(q|k)\.`, `attn_vo=attn\.(v|o)\.`, `mlp=\.mlp\.`, `norm=(^|\.)ln`, `embedding=^embed\.`} {
		r, err := ParseGroupRule(s)
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, r)
	}
	return rules
}

func TestGroupBlocks(t *testing.T) {
	g := GroupBlocks(transformerBlocks(), transformerRules(t))
	want := map[string]int{"embedding": 1, "norm": 5, "attn_qk": 4, "attn_vo": 4, "mlp": 4, "head.weight": 1}
	if len(g) != len(want) {
		t.Fatalf("%d groups, want %d: %+v", len(g), len(want), g)
	}
	order := []string{"embedding", "norm", "attn_qk", "attn_vo", "mlp", "head.weight"}
	for i, gr := range g {
		if gr.Name != order[i] || len(gr.Blocks) != want[gr.Name] || gr.Len() != 3*want[gr.Name] {
			t.Errorf("group %d = %s with %d blocks, want %s with %d", i, gr.Name, len(gr.Blocks), order[i], want[order[i]])
		}
	}
	if r := g[2].Ranges(); r[0] != (hvp.Range{Offset: 6, Len: 3}) || r[2] != (hvp.Range{Offset: 30, Len: 3}) {
		t.Errorf("attn_qk ranges %v", r)
	}
	for _, bad := range []string{"", "x", "=a", "a=", "a=("} {
		if _, err := ParseGroupRule(bad); err == nil {
			t.Errorf("ParseGroupRule accepted %q", bad)
		}
	}
	if n := len(GroupBlocks(transformerBlocks(), nil)); n != len(transformerBlocks()) {
		t.Errorf("no rules: %d groups", n)
	}
}

// TestBlockEigenInterlacing: on a random indefinite matrix, every group's
// λ1 lies in [λmin, λ1] of the whole, and a group covering everything has
// λ1 itself.
func TestBlockEigenInterlacing(t *testing.T) {
	blocks := transformerBlocks()
	n := 3 * len(blocks)
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			s.SetSym(i, j, math.Sin(float64(7*i+3*j+i*j)))
		}
	}
	var es mat.EigenSym
	if !es.Factorize(s, false) {
		t.Fatal("EigenSym failed")
	}
	ev := es.Values(nil)
	groups := append(GroupBlocks(blocks, transformerRules(t)), Group{Name: "all", Blocks: blocks})
	res, warm, err := BlockEigen(context.Background(), hvp.NewDense(s), groups, EigenOptions{Tol: 1e-10, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Value > ev[n-1]+1e-9 || r.Value < ev[0]-1e-9 {
			t.Errorf("%s: λ1 = %g outside [%g, %g]", r.Name, r.Value, ev[0], ev[n-1])
		}
	}
	if all := res[len(res)-1]; math.Abs(all.Value-ev[n-1]) > 1e-9*math.Abs(ev[n-1]) {
		t.Errorf("whole-vector group: λ1 = %.15g, dense %.15g", all.Value, ev[n-1])
	}
	// Warm from itself: the same values for fewer products.
	res2, _, err := BlockEigen(context.Background(), hvp.NewDense(s), groups, EigenOptions{Tol: 1e-10, Seed: 1}, warm)
	if err != nil {
		t.Fatal(err)
	}
	cold, hot := 0, 0
	for i := range res {
		cold, hot = cold+res[i].HVPs, hot+res2[i].HVPs
		if math.Abs(res[i].Value-res2[i].Value) > 1e-9*math.Max(1, math.Abs(res[i].Value)) {
			t.Errorf("%s: warm λ1 %g, cold %g", res[i].Name, res2[i].Value, res[i].Value)
		}
	}
	if hot >= cold {
		t.Errorf("warm start took %d HVPs, cold %d", hot, cold)
	}
}

// ExampleBlockEigen groups a transformer's parameter blocks by kind and
// computes the top eigenvalue of each kind's diagonal Hessian block.
func ExampleBlockEigen() {
	blocks := []Block{
		{Name: "layers.0.attn.q.weight", Offset: 0, Len: 2},
		{Name: "layers.0.mlp.fc1.weight", Offset: 2, Len: 2},
		{Name: "layers.1.attn.k.weight", Offset: 4, Len: 2},
	}
	qk, _ := ParseGroupRule(`attn_qk=attn\.(q|k)\.`)
	mlp, _ := ParseGroupRule(`mlp=\.mlp\.`)
	groups := GroupBlocks(blocks, []GroupRule{qk, mlp})
	// H = diag(1, 2, 3, 4, 5, 6): the attention group holds coordinates 0, 1, 4, 5.
	h := mat.NewSymDense(6, nil)
	for i := range 6 {
		h.SetSym(i, i, float64(i+1))
	}
	res, _, err := BlockEigen(context.Background(), hvp.NewDense(h), groups, EigenOptions{Seed: 1}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range res {
		fmt.Printf("%s (dim %d): λ1 = %.4f\n", r.Name, r.Dim, r.Value)
	}
	// Output:
	// attn_qk (dim 4): λ1 = 6.0000
	// mlp (dim 2): λ1 = 4.0000
}
