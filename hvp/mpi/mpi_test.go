//go:build mpi

package mpi_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/hvp/mpi"
	"gonum.org/v1/gonum/mat"
)

// world is MPI_COMM_WORLD for the whole test binary: MPI can be
// initialised only once per process. Run the binary directly (one rank) or
// under mpirun (go test -c -tags mpi; mpirun -np 2 ./mpi.test).
var world *mpi.Comm

func TestMain(m *testing.M) {
	c, err := mpi.Init()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	world = c
	code := m.Run()
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "Close:", err)
		os.Exit(1)
	}
	// After MPI_Finalize nothing may reach MPI again.
	if err := c.AllreduceSum([]float64{1}); !errors.Is(err, mpi.ErrClosed) {
		fmt.Fprintf(os.Stderr, "AllreduceSum after Close: %v, want ErrClosed\n", err)
		code = 1
	}
	if err := c.Close(); !errors.Is(err, mpi.ErrClosed) {
		fmt.Fprintf(os.Stderr, "second Close: %v, want ErrClosed\n", err)
		code = 1
	}
	if _, err := mpi.Init(); err == nil {
		fmt.Fprintln(os.Stderr, "Init after Finalize succeeded, want an error")
		code = 1
	}
	os.Exit(code)
}

func TestRankSize(t *testing.T) {
	if world.Size() < 1 || world.Rank() < 0 || world.Rank() >= world.Size() {
		t.Fatalf("rank %d of %d", world.Rank(), world.Size())
	}
	t.Logf("rank %d of %d", world.Rank(), world.Size())
}

func TestInitTwice(t *testing.T) {
	if _, err := mpi.Init(); err == nil {
		t.Fatal("second Init succeeded, want an error")
	}
}

func TestAllreduceSum(t *testing.T) {
	rank, size := world.Rank(), world.Size()
	const n = 1000
	buf := make([]float64, n)
	for i := range buf {
		buf[i] = float64((rank + 1) * (i + 1)) // integers: the sum is exact
	}
	if err := world.AllreduceSum(buf); err != nil {
		t.Fatal(err)
	}
	for i, x := range buf {
		if want := float64(size * (size + 1) / 2 * (i + 1)); x != want {
			t.Fatalf("entry %d: %v, want %v", i, x, want)
		}
	}
}

// Broadcast must deliver every root's bytes exactly, whatever their values
// (a float64 sum could not carry them) and length.
func TestBroadcast(t *testing.T) {
	rank, size := world.Rank(), world.Size()
	for _, n := range []int{0, 1, 7, 1 << 20} {
		for root := range size {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i*131 + i>>8 + 7 + root)
			}
			buf := make([]byte, n)
			for i := range buf {
				buf[i] = byte(rank + 1)
			}
			if rank == root {
				copy(buf, src)
			}
			if err := world.Broadcast(buf, root); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(buf, src) {
				t.Fatalf("n=%d root=%d: rank %d received different bytes", n, root, rank)
			}
		}
	}
	if err := world.Broadcast(make([]byte, 1), size); err == nil {
		t.Fatal("Broadcast from a root outside the group succeeded")
	}
}

// identical checks that x has the same bits on every rank, by gathering
// it into per-rank rows (one non-zero term per entry: exact).
func identical(t *testing.T, x []float64) {
	t.Helper()
	rank, size, n := world.Rank(), world.Size(), len(x)
	table := make([]float64, size*n)
	copy(table[rank*n:], x)
	if err := world.AllreduceSum(table); err != nil {
		t.Fatal(err)
	}
	for r := range size {
		if !slices.Equal(table[r*n:(r+1)*n], table[:n]) {
			t.Fatalf("rank %d's result differs from rank 0's", r)
		}
	}
}

func TestAllreduceSumSameOnEveryRank(t *testing.T) {
	rng := rand.New(rand.NewPCG(uint64(world.Rank()), 1))
	buf := make([]float64, 100_003) // large enough for the segmented algorithms
	for i := range buf {
		buf[i] = rng.NormFloat64() * math.Pow(10, float64(rng.IntN(16)-8))
	}
	if err := world.AllreduceSum(buf); err != nil {
		t.Fatal(err)
	}
	identical(t, buf)
}

// Collective calls from many goroutines are funnelled through the MPI
// thread one at a time. Each rank may serve them in a different order, so
// each phase uses one kind of call with equal arguments: then any pairing
// across ranks is a valid one.
func TestConcurrentCallers(t *testing.T) {
	const workers = 8
	phase := func(f func(w int) error) {
		t.Helper()
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { errs[w] = f(w) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	phase(func(int) error { return world.Barrier() })
	sums := make([][]float64, workers)
	phase(func(w int) error {
		sums[w] = []float64{1, 2, 3}
		return world.AllreduceSum(sums[w])
	})
	s := float64(world.Size())
	for w, x := range sums {
		if !slices.Equal(x, []float64{s, 2 * s, 3 * s}) {
			t.Fatalf("worker %d: %v", w, x)
		}
	}
}

// Open MPI must not have taken over SIGSEGV: Go turns a nil dereference
// into a recoverable panic only while its own handler is installed.
func TestGoSignalsStillWork(t *testing.T) {
	var p *int
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	_ = *p
}

func TestAllReduceOperator(t *testing.T) {
	rank, size := world.Rank(), world.Size()
	const n = 7
	count := func(r int) int { return r + 1 }
	sym := func(r int) *mat.SymDense {
		rng := rand.New(rand.NewPCG(uint64(r), 9))
		s := mat.NewSymDense(n, nil)
		for i := range n {
			for j := i; j < n; j++ {
				s.SetSym(i, j, rng.NormFloat64())
			}
		}
		return s
	}
	op, err := hvp.NewAllReduce(world, hvp.NewDense(sym(rank)), count(rank))
	if err != nil {
		t.Fatal(err)
	}
	v := []float64{1, 2, 3, 4, 5, 6, 7}
	got := make([]float64, n)
	if err := op.Apply(got, v); err != nil {
		t.Fatal(err)
	}
	// Every rank can build every shard's matrix, so each checks the whole.
	want := mat.NewVecDense(n, nil)
	total := size * (size + 1) / 2
	for r := range size {
		var hv mat.VecDense
		hv.MulVec(sym(r), mat.NewVecDense(n, v))
		want.AddScaledVec(want, float64(count(r))/float64(total), &hv)
	}
	for i := range n {
		if math.Abs(got[i]-want.AtVec(i)) > 1e-12*(1+math.Abs(want.AtVec(i))) {
			t.Fatalf("(Hv)[%d] = %v, want %v", i, got[i], want.AtVec(i))
		}
	}
	identical(t, got)
}

// BenchmarkAllreduceSum times one all-reduce of a parameter vector the size
// of the 784-128-128-10 MLP's. Under mpirun every rank must run the same
// number of iterations, so fix it:
//
//	mpirun -np 2 ./mpi.test -test.run '^$' -test.bench AllreduceSum -test.benchtime 200x
func BenchmarkAllreduceSum(b *testing.B) {
	buf := make([]float64, 118_282)
	for i := range buf {
		buf[i] = float64(i)
	}
	b.SetBytes(int64(8 * len(buf)))
	for b.Loop() {
		if err := world.AllreduceSum(buf); err != nil {
			b.Fatal(err)
		}
	}
}
