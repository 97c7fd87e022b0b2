package hessian

import (
	"math"
	"sync"
	"testing"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/trainer"
)

// onRanks runs f once per rank of an in-process group, concurrently.
func onRanks(size int, f func(c hvp.Comm) error) []error {
	errs := make([]error, size)
	var wg sync.WaitGroup
	for r, c := range hvp.NewInProcGroup(size) {
		wg.Go(func() { errs[r] = f(c) })
	}
	wg.Wait()
	return errs
}

// TestNewShardedEqualsOneProcess: over 3 ranks, each applying its shard in
// chunks, the all-reduced Hessian is the one-process Hessian of the whole
// set to rounding; and so is the sum of the Replica operators of the shards
// that ShardBatch cuts, weighted by their sizes.
func TestNewShardedEqualsOneProcess(t *testing.T) {
	net, d := tanhProblem(t, 4)
	v := make([]float64, net.Dim())
	for i := range v {
		v[i] = math.Sin(float64(i) + 1)
	}
	n, want := len(v), make([]float64, len(v))
	if whole, err := NewExact(net, trainer.HeadBatch(d, 0), trainer.CrossEntropy{}, trainer.ModeEval); err != nil {
		t.Fatal(err)
	} else if err := whole.Apply(want, v); err != nil {
		t.Fatal(err)
	}
	const ranks = 3
	sharded := make([][]float64, ranks)
	weighted := make([][]float64, ranks)
	errs := onRanks(ranks, func(c hvp.Comm) error {
		op, err := NewSharded(c, net, d, ShardOptions{Mode: trainer.ModeEval, Chunk: 7})
		if err != nil {
			return err
		}
		sharded[c.Rank()] = make([]float64, n)
		if err := op.Apply(sharded[c.Rank()], v); err != nil {
			return err
		}
		shard, err := ShardBatch(trainer.HeadBatch(d, 0), c)
		if err != nil {
			return err
		}
		local, count, err := Replica{Net: net, Shard: shard, Mode: trainer.ModeEval}.Operator()
		if err != nil {
			return err
		}
		hv := make([]float64, n)
		if err := local.Apply(hv, v); err != nil {
			return err
		}
		for i := range hv {
			hv[i] *= float64(count) / float64(d.Len())
		}
		weighted[c.Rank()] = hv
		return nil
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	sum := make([]float64, n)
	for _, hv := range weighted {
		for i := range sum {
			sum[i] += hv[i]
		}
	}
	for i := range want {
		tol := 1e-12 * (1 + math.Abs(want[i]))
		for r := range ranks {
			if math.Abs(sharded[r][i]-want[i]) > tol {
				t.Fatalf("rank %d: (Hv)[%d] = %v sharded, %v in one process", r, i, sharded[r][i], want[i])
			}
		}
		if math.Abs(sum[i]-want[i]) > tol {
			t.Fatalf("(Hv)[%d] = %v from the replicas' shards, %v in one process", i, sum[i], want[i])
		}
	}
}

// TestNewShardedFailsOnEveryRank: a batch that does not fit the model fails
// on all ranks, so none waits in a collective call.
func TestNewShardedFailsOnEveryRank(t *testing.T) {
	net, _ := tanhProblem(t, 4)
	bad := data.Synthetic(30, trainer.Shape{H: 1, W: 1, C: 4}, 3, 3)
	for r, err := range onRanks(2, func(c hvp.Comm) error {
		_, err := NewSharded(c, net, bad, ShardOptions{Chunk: 100})
		return err
	}) {
		if err == nil {
			t.Errorf("rank %d: no error for a 4-feature set on a 6-input model", r)
		}
	}
}

// tanhProblem is a 6-5-3 tanh MLP and 50 samples for it.
func tanhProblem(t *testing.T, seed uint64) (*trainer.Network, *data.Dataset) {
	t.Helper()
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{6, 5, 3}, Activation: trainer.Tanh}, seed)
	if err != nil {
		t.Fatal(err)
	}
	return net, data.Synthetic(50, net.InShape(), 3, seed)
}
