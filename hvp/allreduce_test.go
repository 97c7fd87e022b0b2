package hvp_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// runRanks runs f once per rank, each in its own goroutine, as the ranks of
// an MPI job would, and returns their results in rank order.
func runRanks[T any](size int, f func(c hvp.Comm) (T, error)) ([]T, []error) {
	comms := hvp.NewInProcGroup(size)
	out := make([]T, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() { out[r], errs[r] = f(c) })
	}
	wg.Wait()
	return out, errs
}

func TestShard(t *testing.T) {
	for _, tc := range []struct{ n, size int }{{1, 1}, {10, 1}, {10, 2}, {10, 3}, {10, 4}, {4, 4}, {10000, 2}, {10001, 7}} {
		next, lo, hi := 0, tc.n, 0
		for r := range tc.size {
			from, to, err := hvp.Shard(tc.n, r, tc.size)
			if err != nil {
				t.Fatalf("Shard(%d,%d,%d): %v", tc.n, r, tc.size, err)
			}
			if from != next {
				t.Errorf("Shard(%d,%d,%d) starts at %d, want %d (contiguous, in rank order)", tc.n, r, tc.size, from, next)
			}
			next = to
			lo, hi = min(lo, to-from), max(hi, to-from)
		}
		if next != tc.n {
			t.Errorf("n=%d size=%d: shards cover [0,%d)", tc.n, tc.size, next)
		}
		if hi-lo > 1 || lo < 1 {
			t.Errorf("n=%d size=%d: shard sizes in [%d,%d], want non-empty and differing by ≤ 1", tc.n, tc.size, lo, hi)
		}
	}
	for _, tc := range []struct{ n, rank, size int }{{3, 0, 4}, {10, -1, 2}, {10, 2, 2}, {10, 0, 0}} {
		if _, _, err := hvp.Shard(tc.n, tc.rank, tc.size); err == nil {
			t.Errorf("Shard(%d,%d,%d) succeeded, want an error", tc.n, tc.rank, tc.size)
		}
	}
}

func TestInProcAllreduceSum(t *testing.T) {
	const size, n, rounds = 4, 33, 50
	inputs := make([][][]float64, rounds) // [round][rank][i]
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range inputs {
		inputs[k] = make([][]float64, size)
		for r := range size {
			inputs[k][r] = make([]float64, n)
			for i := range n {
				inputs[k][r][i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(20)-10))
			}
		}
	}
	got, errs := runRanks(size, func(c hvp.Comm) ([][]float64, error) {
		var res [][]float64
		for k := range rounds {
			buf := slices.Clone(inputs[k][c.Rank()])
			if err := c.AllreduceSum(buf); err != nil {
				return nil, err
			}
			res = append(res, buf)
		}
		return res, nil
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for k := range rounds {
		for i := range n {
			want := inputs[k][0][i] // summed in rank order
			for r := 1; r < size; r++ {
				want += inputs[k][r][i]
			}
			for r := range size {
				if g := got[r][k][i]; math.Float64bits(g) != math.Float64bits(want) {
					t.Fatalf("round %d entry %d: rank %d has %v, want %v (bit-identical, rank-order sum)", k, i, r, g, want)
				}
			}
		}
	}
}

func TestInProcAllreduceLengthMismatch(t *testing.T) {
	_, errs := runRanks(3, func(c hvp.Comm) (struct{}, error) {
		return struct{}{}, c.AllreduceSum(make([]float64, 4+c.Rank()/2))
	})
	for r, err := range errs {
		if !errors.Is(err, hvp.ErrDim) {
			t.Errorf("rank %d: err = %v, want ErrDim on every rank", r, err)
		}
	}
}

// Broadcast must deliver root's bytes exactly (every byte value, any
// length, any root), interleave with AllreduceSum, and leave root's buffer
// as it was.
func TestInProcBroadcast(t *testing.T) {
	for _, size := range []int{1, 2, 3} {
		for _, n := range []int{0, 1, 7, 256, 1 << 16} {
			for root := range size {
				src := make([]byte, n)
				for i := range src {
					src[i] = byte(i*131 + i>>8 + 7)
				}
				got, errs := runRanks(size, func(c hvp.Comm) ([]byte, error) {
					buf := make([]byte, n)
					for i := range buf {
						buf[i] = byte(c.Rank() + 1) // garbage on the other ranks
					}
					if c.Rank() == root {
						copy(buf, src)
					}
					if err := c.Broadcast(buf, root); err != nil {
						return nil, err
					}
					sum := []float64{1}
					if err := c.AllreduceSum(sum); err != nil || sum[0] != float64(size) {
						return nil, fmt.Errorf("AllreduceSum after Broadcast: %v, %v", sum, err)
					}
					return buf, nil
				})
				if err := errors.Join(errs...); err != nil {
					t.Fatalf("size %d n %d root %d: %v", size, n, root, err)
				}
				for r, b := range got {
					if !slices.Equal(b, src) {
						t.Fatalf("size %d n %d root %d: rank %d received different bytes", size, n, root, r)
					}
				}
			}
		}
	}
}

// Ranks that disagree on a collective must all get an error, not hang or
// receive a wrong result.
func TestInProcCollectiveMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(c hvp.Comm) error
		want error
	}{
		{"length", func(c hvp.Comm) error { return c.Broadcast(make([]byte, 4+c.Rank()/2), 0) }, hvp.ErrDim},
		{"root", func(c hvp.Comm) error { return c.Broadcast(make([]byte, 4), c.Rank()/2) }, nil},
		{"root out of range", func(c hvp.Comm) error { return c.Broadcast(make([]byte, 4), 3) }, nil},
		{"kind", func(c hvp.Comm) error {
			if c.Rank() == 2 {
				return c.AllreduceSum(make([]float64, 4))
			}
			return c.Broadcast(make([]byte, 4), 0)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, errs := runRanks(3, func(c hvp.Comm) (string, error) {
				err := tc.call(c)
				// The group is usable again after a failed round.
				b := []byte{byte(c.Rank()), 9}
				if berr := c.Broadcast(b, 1); berr != nil || b[0] != 1 {
					return fmt.Sprintf("next Broadcast: %v, %v", b, berr), err
				}
				return "", err
			})
			for r, err := range errs {
				if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
					t.Errorf("rank %d: err = %v, want an error (%v) on every rank", r, err, tc.want)
				}
				if next[r] != "" {
					t.Errorf("rank %d: %s", r, next[r])
				}
			}
		})
	}
}

func randomSym(n int, seed uint64) *mat.SymDense {
	rng := rand.New(rand.NewPCG(seed, 7))
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			s.SetSym(i, j, rng.NormFloat64())
		}
	}
	return s
}

func TestAllReduceWeightsByShardSize(t *testing.T) {
	const n = 6
	counts := []int{1, 3, 2}
	mats := make([]*mat.SymDense, len(counts))
	want := mat.NewSymDense(n, nil)
	for r, c := range counts {
		mats[r] = randomSym(n, uint64(r))
		var w mat.SymDense
		w.ScaleSym(float64(c)/6, mats[r])
		want.AddSym(want, &w)
	}
	v := []float64{1, -2, 0.5, 3, 0, -1}
	var wantHv mat.VecDense
	wantHv.MulVec(want, mat.NewVecDense(n, v))
	got, errs := runRanks(len(counts), func(c hvp.Comm) ([]float64, error) {
		a, err := hvp.NewAllReduce(c, hvp.NewDense(mats[c.Rank()]), counts[c.Rank()])
		if err != nil {
			return nil, err
		}
		if a.GlobalCount() != 6 || a.LocalCount() != counts[c.Rank()] {
			return nil, fmt.Errorf("counts local %d global %d", a.LocalCount(), a.GlobalCount())
		}
		dst := make([]float64, n)
		if err := a.Apply(dst, v); err != nil {
			return nil, err
		}
		if s := a.Stats(); s.Applies != 1 {
			return nil, fmt.Errorf("Stats().Applies = %d, want 1", s.Applies)
		}
		return dst, nil
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for r := range got {
		if !slices.Equal(got[r], got[0]) {
			t.Errorf("rank %d got %v, rank 0 %v: want identical", r, got[r], got[0])
		}
		for i := range n {
			if d := math.Abs(got[r][i] - wantHv.AtVec(i)); d > 1e-13 {
				t.Errorf("rank %d: (Hv)[%d] = %v, want %v", r, i, got[r][i], wantHv.AtVec(i))
			}
		}
	}
}

type failingOp struct{ n int }

func (f failingOp) Dim() int                   { return f.n }
func (f failingOp) Apply(_, _ []float64) error { return errors.New("boom") }

// A failure on one rank must surface on every rank instead of leaving the
// others blocked in the all-reduce.
func TestAllReduceFailureReachesEveryRank(t *testing.T) {
	const n = 4
	_, errs := runRanks(3, func(c hvp.Comm) (struct{}, error) {
		var local hvp.Operator = hvp.NewDense(randomSym(n, 1))
		if c.Rank() == 1 {
			local = failingOp{n}
		}
		a, err := hvp.NewAllReduce(c, local, 5)
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, a.Apply(make([]float64, n), make([]float64, n))
	})
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: Apply succeeded although rank 1 failed", r)
		}
	}
}

func TestNewAllReduceRejectsMismatch(t *testing.T) {
	for name, mk := range map[string]func(rank int) (hvp.Operator, int){
		"dim":   func(r int) (hvp.Operator, int) { return hvp.NewDense(randomSym(3+r%2, 1)), 2 },
		"count": func(r int) (hvp.Operator, int) { return hvp.NewDense(randomSym(3, 1)), 1 - 2*r },
		"nil":   func(r int) (hvp.Operator, int) { return map[bool]hvp.Operator{true: nil}[r == 1], 1 },
		"empty": func(r int) (hvp.Operator, int) { return hvp.NewDense(randomSym(3, 1)), 0 },
	} {
		t.Run(name, func(t *testing.T) {
			_, errs := runRanks(2, func(c hvp.Comm) (*hvp.AllReduce, error) {
				op, n := mk(c.Rank())
				if op == nil && name != "nil" {
					op = hvp.NewDense(randomSym(3, 1))
				}
				return hvp.NewAllReduce(c, op, n)
			})
			for r, err := range errs {
				if err == nil {
					t.Errorf("rank %d: NewAllReduce succeeded, want an error on every rank", r)
				}
			}
		})
	}
}

// analysis is what one rank computes: the same calls hessmon analyze makes.
type analysis struct {
	loss       float64
	eig        []float64
	trace      float64
	traceSE    float64
	esdNodes   []float64
	esdWeights []float64
	hvps       int
}

func analyse(op hvp.Operator) (analysis, error) {
	ctx := context.Background()
	var a analysis
	if l, ok := op.(interface{ Loss() float64 }); ok {
		a.loss = l.Loss()
	}
	er, _, err := estimators.TopEigen(ctx, op, estimators.EigenOptions{K: 5, Tol: 1e-10, MaxHVPs: 600, Seed: 11, KeepVectors: true}, nil)
	if err != nil {
		return a, fmt.Errorf("TopEigen: %w", err)
	}
	// A fixed probe budget (RelTol < 0), deflated by the eigenvectors as in
	// hessmon analyze.
	tr, _, err := estimators.Trace(ctx, op, estimators.TraceOptions{RelTol: -1, MaxHVPs: 40, Seed: 12, Deflate: er.Vectors}, nil)
	if err != nil {
		return a, fmt.Errorf("Trace: %w", err)
	}
	esd, _, err := estimators.ESD(ctx, op, estimators.ESDOptions{Probes: 2, Steps: 40, Seed: 13}, nil)
	if err != nil {
		return a, fmt.Errorf("ESD: %w", err)
	}
	a.eig, a.trace, a.traceSE = er.Values, tr.Value, tr.StdErr
	a.esdNodes, a.esdWeights = esd.Nodes, esd.Weights
	a.hvps = er.HVPs + tr.HVPs + esd.HVPs
	return a, nil
}

// localOperator builds a rank's Hessian on its shard, split into chunks as
// hessmon analyze does for large batches.
func localOperator(net *trainer.Network, d *data.Dataset, chunk int) (hvp.Operator, error) {
	if d.Len() <= chunk {
		return hessian.NewExact(net, trainer.HeadBatch(d, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	}
	var batches []trainer.Batch
	for from := 0; from < d.Len(); from += chunk {
		sub, err := d.Subset(from, min(from+chunk, d.Len()))
		if err != nil {
			return nil, err
		}
		batches = append(batches, trainer.HeadBatch(sub, 0))
	}
	return hessian.NewExactBatches(net, batches, trainer.CrossEntropy{}, trainer.ModeEval)
}

// The issue's acceptance test: sharding over 1, 2 and 4 ranks gives the
// eigenvalues, trace and ESD of one process on the whole batch.
func TestAllReduceMatchesSingleProcess(t *testing.T) {
	const samples = 203 // not divisible by 2 or 4: uneven shards
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{8, 16, 4}, Activation: trainer.Tanh, BN: true}, 3)
	if err != nil {
		t.Fatal(err)
	}
	ds := data.Synthetic(samples, net.InShape(), 4, 5)
	single, err := hessian.NewExact(net, trainer.HeadBatch(ds, 0), trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		t.Fatal(err)
	}
	want, err := analyse(single)
	if err != nil {
		t.Fatal(err)
	}
	if want.trace <= 0 || want.eig[0] <= 0 {
		t.Fatalf("degenerate reference: λ=%v trace=%v", want.eig, want.trace)
	}
	const tol = 1e-10
	norm := math.Abs(want.eig[0]) // ‖H‖ for this PSD-dominated spectrum
	for _, size := range []int{1, 2, 4} {
		for _, chunk := range []int{samples, 17} {
			t.Run(fmt.Sprintf("ranks=%d/chunk=%d", size, chunk), func(t *testing.T) {
				got, errs := runRanks(size, func(c hvp.Comm) (analysis, error) {
					shard, err := hessian.ShardDataset(ds, c)
					if err != nil {
						return analysis{}, err
					}
					local, err := localOperator(net, shard, chunk)
					if err != nil {
						return analysis{}, err
					}
					op, err := hvp.NewAllReduce(c, local, shard.Len())
					if err != nil {
						return analysis{}, err
					}
					return analyse(op)
				})
				if err := errors.Join(errs...); err != nil {
					t.Fatal(err)
				}
				for r, g := range got[1:] {
					if !slices.Equal(g.eig, got[0].eig) || g.trace != got[0].trace || !slices.Equal(g.esdNodes, got[0].esdNodes) ||
						!slices.Equal(g.esdWeights, got[0].esdWeights) || g.loss != got[0].loss {
						t.Errorf("rank %d differs from rank 0: want bit-identical results on every rank", r+1)
					}
				}
				g := got[0]
				if g.hvps != want.hvps || len(g.eig) != len(want.eig) || len(g.esdNodes) != len(want.esdNodes) {
					t.Fatalf("HVPs %d, %d eigenvalues, %d ESD nodes; single process: %d, %d, %d", g.hvps, len(g.eig), len(g.esdNodes),
						want.hvps, len(want.eig), len(want.esdNodes))
				}
				// worst records the largest |a−b|/scale of each kind.
				worst := map[string]float64{}
				check := func(kind string, i int, a, b, scale float64) {
					d := math.Abs(a-b) / scale
					if !(d <= tol) {
						t.Errorf("%s[%d] = %.16g, single process %.16g (relative difference %.2g)", kind, i, a, b, d)
					}
					worst[kind] = max(worst[kind], d)
				}
				check("loss", 0, g.loss, want.loss, math.Abs(want.loss))
				for i := range want.eig {
					check("eigenvalue", i, g.eig[i], want.eig[i], math.Abs(want.eig[i]))
				}
				check("trace", 0, g.trace, want.trace, math.Abs(want.trace))
				// Ritz values near 0 are only determined to ε·‖H‖, so ESD
				// nodes are compared relative to ‖H‖; weights sum to 1.
				for i := range want.esdNodes {
					check("ESD node", i, g.esdNodes[i], want.esdNodes[i], norm)
					check("ESD weight", i, g.esdWeights[i], want.esdWeights[i], 1)
				}
				t.Logf("largest relative differences: loss %.1e, eigenvalues %.1e, trace %.1e, ESD nodes %.1e, weights %.1e",
					worst["loss"], worst["eigenvalue"], worst["trace"], worst["ESD node"], worst["ESD weight"])
			})
		}
	}
}

// Each rank holds a shard and gets the Hessian of the mean loss over all
// samples: here rank 0 has 1 sample with Hessian diag(4, 0) and rank 1 has
// 3 samples with Hessian diag(0, 8), so H = diag(4·¼, 8·¾).
func ExampleNewAllReduce() {
	hess := []*mat.SymDense{mat.NewSymDense(2, []float64{4, 0, 0, 0}), mat.NewSymDense(2, []float64{0, 0, 0, 8})}
	counts := []int{1, 3}
	results := make([][]float64, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r, c := range hvp.NewInProcGroup(2) { // with MPI: one process per rank
		wg.Go(func() {
			op, err := hvp.NewAllReduce(c, hvp.NewDense(hess[r]), counts[r])
			if err != nil {
				errs[r] = err
				return
			}
			results[r] = make([]float64, 2)
			errs[r] = op.Apply(results[r], []float64{1, 1})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(results[0], results[1])
	// Output: [1 6] [1 6]
}
