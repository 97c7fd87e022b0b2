package distributed_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/distributed"
	"github.com/hessmon/hessmon/snapshot"
)

// countingComm counts a rank's collective calls, so that tests can check
// that every rank made the same ones (the protocol's whole point).
type countingComm struct {
	hvp.Comm
	calls atomic.Int64
}

func (c *countingComm) AllreduceSum(buf []float64) error {
	c.calls.Add(1)
	return c.Comm.AllreduceSum(buf)
}

func (c *countingComm) Broadcast(buf []byte, root int) error {
	c.calls.Add(1)
	return c.Comm.Broadcast(buf, root)
}

// runRanks runs f once per rank of an in-process group, each rank in its
// own goroutine as under mpirun, and returns the errors and each rank's
// count of collective calls. A run that does not end is a deadlock.
func runRanks(t *testing.T, size int, f func(c hvp.Comm) error) (errs []error, calls []int64) {
	t.Helper()
	group := hvp.NewInProcGroup(size)
	errs, calls = make([]error, size), make([]int64, size)
	var wg sync.WaitGroup
	for r := range size {
		wg.Go(func() {
			c := &countingComm{Comm: group[r]}
			errs[r] = f(c)
			calls[r] = c.calls.Load()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the ranks did not finish: deadlocked in a collective call?")
	}
	return errs, calls
}

// sameCalls fails unless every rank made as many collective calls as rank 0.
func sameCalls(t *testing.T, calls []int64) {
	t.Helper()
	for r, n := range calls {
		if n != calls[0] {
			t.Errorf("rank %d made %d collective calls, rank 0 %d: the ranks fell out of step", r, n, calls[0])
		}
	}
}

func TestHandshake(t *testing.T) {
	fields := func(dim float64, w []float64) []distributed.Field {
		return append([]distributed.Field{{Name: "parameter count", Value: dim}, {Name: "steps", Value: 100}},
			distributed.Sum(w).Fields("initial weights")...)
	}
	weights := []float64{0.5, -1, 2}
	setupFailed := errors.New("cannot open the store")
	for _, size := range []int{2, 3} {
		last := size - 1
		for _, tc := range []struct {
			name  string
			rank  func(r int) (setupErr error, f []distributed.Field)
			check func(r int, err error) bool
		}{
			{"agree", func(int) (error, []distributed.Field) { return nil, fields(3, weights) },
				func(_ int, err error) bool { return err == nil }},
			{"set-up failed on the last rank", func(r int) (error, []distributed.Field) {
				if r == last {
					return setupFailed, nil
				}
				return nil, fields(3, weights)
			}, func(r int, err error) bool {
				if r == last {
					return errors.Is(err, setupFailed)
				}
				return errors.Is(err, distributed.ErrPeerFailed) && strings.Contains(err.Error(), fmt.Sprintf("[%d]", last))
			}},
			{"parameter count differs", func(r int) (error, []distributed.Field) {
				if r == last {
					return nil, fields(4, weights)
				}
				return nil, fields(3, weights)
			}, func(_ int, err error) bool {
				return errors.Is(err, distributed.ErrMismatch) && strings.Contains(err.Error(), fmt.Sprintf("rank %d's parameter count", last))
			}},
			{"initial weights permuted", func(r int) (error, []distributed.Field) {
				w := slices.Clone(weights)
				if r == last {
					w[0], w[1] = w[1], w[0] // same sum and sum of squares
				}
				return nil, fields(3, w)
			}, func(_ int, err error) bool {
				return errors.Is(err, distributed.ErrMismatch) && strings.Contains(err.Error(), "initial weights (Σiw)")
			}},
			{"field count differs", func(r int) (error, []distributed.Field) {
				f := fields(3, weights)
				if r == last {
					f = f[:2]
				}
				return nil, f
			}, func(_ int, err error) bool { return errors.Is(err, distributed.ErrMismatch) }},
		} {
			t.Run(fmt.Sprintf("%d ranks/%s", size, tc.name), func(t *testing.T) {
				errs, calls := runRanks(t, size, func(c hvp.Comm) error {
					setupErr, f := tc.rank(c.Rank())
					return distributed.Handshake(c, setupErr, f...)
				})
				for r, err := range errs {
					if !tc.check(r, err) {
						t.Errorf("rank %d: err = %v", r, err)
					}
				}
				sameCalls(t, calls)
			})
		}
	}
}

// memWarm is a WarmStore in memory.
type memWarm struct {
	mu      sync.Mutex
	state   map[string][]byte
	puts    int
	loadErr error
}

func (m *memWarm) Warm(run string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state[run], m.loadErr
}

func (m *memWarm) PutWarm(run string, b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.state == nil {
		m.state = map[string][]byte{}
	}
	m.state[run] = slices.Clone(b)
	m.puts++
	return nil
}

// ShareWarm must hand every rank rank 0's bytes exactly, whatever the
// other ranks' stores hold, and save new states to rank 0's store only.
func TestShareWarm(t *testing.T) {
	for _, size := range []int{2, 3} {
		for _, n := range []int{0, 1, 7, 3 << 20} {
			src := make([]byte, n)
			for i := range src {
				src[i] = byte(i*131 + i>>8 + 7)
			}
			stores := make([]*memWarm, size)
			for r := range stores {
				stores[r] = &memWarm{state: map[string][]byte{"run": {byte(r), 1, 2}}}
			}
			stores[0].state["run"] = src
			got := make([][]byte, size)
			errs, calls := runRanks(t, size, func(c hvp.Comm) error {
				w, err := distributed.ShareWarm(c, stores[c.Rank()], "run")
				if err != nil {
					return err
				}
				if got[c.Rank()], err = w.Warm("run"); err != nil {
					return err
				}
				return w.PutWarm("run", []byte{42, byte(c.Rank())})
			})
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("size %d, %d bytes: %v", size, n, err)
			}
			sameCalls(t, calls)
			for r, b := range got {
				if !slices.Equal(b, src) {
					t.Errorf("size %d, %d bytes: rank %d received different bytes", size, n, r)
				}
			}
			if b := stores[0].state["run"]; stores[0].puts != 1 || !slices.Equal(b, []byte{42, 0}) {
				t.Errorf("rank 0's store holds %v after %d puts; want rank 0's new state [42 0] once", b, stores[0].puts)
			}
			for r := 1; r < size; r++ {
				if stores[r].puts != 0 {
					t.Errorf("rank %d wrote its store; only rank 0 may", r)
				}
			}
		}
	}
	// Rank 0 cannot load the state: every rank fails, none waits.
	broken := errors.New("disk on fire")
	errs, calls := runRanks(t, 3, func(c hvp.Comm) error {
		st := &memWarm{}
		if c.Rank() == 0 {
			st.loadErr = broken
		}
		_, err := distributed.ShareWarm(c, st, "run")
		return err
	})
	for r, err := range errs {
		if err == nil || (r == 0 && !errors.Is(err, broken)) {
			t.Errorf("rank %d: err = %v; want an error on every rank (rank 0: %v)", r, err, broken)
		}
	}
	sameCalls(t, calls)
}

func TestSum(t *testing.T) {
	a := []float64{1, 2, 3, -4}
	b := []float64{0.25}
	if distributed.Sum(a, b) != distributed.Sum(slices.Clone(a), slices.Clone(b)) {
		t.Error("equal vectors, different checksums")
	}
	perm := []float64{2, 1, 3, -4}
	if s, p := distributed.Sum(a), distributed.Sum(perm); s.Sum != p.Sum || s.SumSq != p.SumSq || s.Weighted == p.Weighted {
		t.Errorf("a permutation must change only the weighted sum: %+v vs %+v", s, p)
	}
	nudged := slices.Clone(a)
	nudged[3] = math.Nextafter(nudged[3], 0)
	if distributed.Sum(a) == distributed.Sum(nudged) {
		t.Error("a change in the last bit went unnoticed")
	}
}

func TestMonitorConfig(t *testing.T) {
	cfg, opt, err := distributed.MonitorConfig(monitor.Config{Every: 10, Async: true, MaxDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Async || cfg.Every != 10 || cfg.MaxDuration < 24*time.Hour || opt.Timeout != time.Minute {
		t.Errorf("MonitorConfig = %+v, %+v; want synchronous probes every 10 steps, no own timer, collective timeout 1m", cfg, opt)
	}
	if _, opt, _ := distributed.MonitorConfig(monitor.Config{}); opt.Timeout != 2*time.Minute {
		t.Errorf("default Timeout %v, want the monitor's default 2m", opt.Timeout)
	}
	// A budget is kept (it only reports in a synchronous run: the schedule
	// stays deterministic, so every rank plans the same); round 2 refused
	// round 1's overhead target, which adapted the interval.
	if cfg, _, err := distributed.MonitorConfig(monitor.Config{Budget: 0.05, FullEvery: 3, Async: true}); err != nil || cfg.Async || cfg.FullEvery != 3 {
		t.Errorf("MonitorConfig with a budget and FullEvery 3: %+v, %v", cfg, err)
	}
}

// The test problem: a data set of samples, each with its own symmetric
// "Hessian" and loss, slowly changing with the training step so that warm
// starts matter. A rank's operator is the mean over its shard, as
// hessian.NewExact is for a model.
const (
	dim     = 14
	samples = 31 // divisible by neither 2 nor 3: unequal shards
)

func sampleMatrix(i int, step int64) *mat.SymDense {
	rng := rand.New(rand.NewPCG(uint64(i), 5))
	s := mat.NewSymDense(dim, nil)
	t := float64(step) / 100
	for a := range dim {
		for b := a; b < dim; b++ {
			x := rng.NormFloat64()
			if a == b {
				x += float64(a) * (1 + t) // a spread spectrum
			}
			s.SetSym(a, b, x*(1+t*rng.Float64()))
		}
	}
	return s
}

func sampleLoss(i int, step int64) float64 { return 1/float64(step+1) + float64(i)/1000 }

// meanOp is the mean Hessian and loss over samples [from, to).
type meanOp struct {
	*hvp.Dense
	loss float64
}

func (m meanOp) Loss() float64 { return m.loss }

func newMeanOp(from, to int, step int64) meanOp {
	sum := mat.NewSymDense(dim, nil)
	loss := 0.0
	for i := from; i < to; i++ {
		sum.AddSym(sum, sampleMatrix(i, step))
		loss += sampleLoss(i, step)
	}
	sum.ScaleSym(1/float64(to-from), sum)
	return meanOp{hvp.NewDense(sum), loss / float64(to-from)}
}

// replica is one rank's copy of the "model": parameters (identical on all
// ranks unless a test nudges them) and its shard of the samples.
type replica struct {
	params   []float64
	from, to int
	step     int64
	wrap     func(meanOp) hvp.Operator // nil: none
	buildErr error
}

func (r *replica) Checksum() distributed.Checksum { return distributed.Sum(r.params) }

func (r *replica) Operator() (hvp.Operator, int, error) {
	if r.buildErr != nil {
		return nil, 0, r.buildErr
	}
	op := newMeanOp(r.from, r.to, r.step)
	if r.wrap != nil {
		return r.wrap(op), r.to - r.from, nil
	}
	return op, r.to - r.from, nil
}

func testConfig() monitor.Config {
	return monitor.Config{Every: 10, TopK: 3, EigenTol: 1e-10, ESDSteps: 10, MaxHVPs: 300, TraceMaxHVPs: 20, Seed: 3,
		MaxDuration: time.Hour}
}

func blocks() []estimators.Block {
	return []estimators.Block{{Name: "a", Offset: 0, Len: 5}, {Name: "b", Offset: 5, Len: dim - 5}}
}

// sink collects snapshots.
type sink struct {
	mu    sync.Mutex
	snaps []snapshot.Snapshot
}

func (s *sink) PutSnapshot(x snapshot.Snapshot) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snaps = append(s.snaps, x)
	return nil
}

var quiet = monitor.WithLogger(slog.New(slog.DiscardHandler))

// rankResult is what one rank of trainRanks saw.
type rankResult struct {
	snaps       []snapshot.Snapshot // the snapshots Step returned (every rank)
	lastStep    int64
	interrupted bool
	left        bool
	probes      int // the rank's monitor's count
	stats       hvp.AllReduceStats
	err         error // Finish's
}

// rankSetup customises one rank of trainRanks.
type rankSetup struct {
	ctx   context.Context
	rep   *replica
	sinks []monitor.Option
	// before is called before each step (the loop's own work); it may
	// cancel ctx, and an error is the loop failing at that step.
	before func(step int64) error
	ls     func(*distributed.Lockstep)
}

// trainRanks runs a replicated "training loop" of steps on size ranks: at
// every step it calls Lockstep.Step, and at the end Finish, as
// cmd/hessmon's train --distributed does with trainer.Train.
func trainRanks(t *testing.T, size int, steps int64, cfg monitor.Config, setup func(rank int, s *rankSetup)) ([]rankResult, []int64) {
	t.Helper()
	res := make([]rankResult, size)
	errs, calls := runRanks(t, size, func(c hvp.Comm) error {
		r := c.Rank()
		from, to, err := hvp.Shard(samples, r, size)
		if err != nil {
			return err
		}
		s := rankSetup{ctx: context.Background(), rep: &replica{params: []float64{1, 2, 3}, from: from, to: to}}
		if setup != nil {
			setup(r, &s)
		}
		mcfg, opt, err := distributed.MonitorConfig(cfg)
		if err != nil {
			return err
		}
		mon, err := monitor.New("run", mcfg, append(s.sinks, quiet)...)
		if err != nil {
			return err
		}
		ls, err := distributed.NewLockstep(c, opt)
		if err != nil {
			return err
		}
		if s.ls != nil {
			s.ls(ls)
		}
		out := &res[r]
		var runErr error
		for step := int64(1); step <= steps; step++ {
			if s.before != nil {
				if runErr = s.before(step); runErr != nil {
					break
				}
			}
			if runErr = s.ctx.Err(); runErr != nil { // as trainer.Train does
				break
			}
			s.rep.step = step
			snap, probed, err := ls.Step(s.ctx, mon, monitor.StepInfo{Step: step, Loss: 1, Blocks: blocks()}, s.rep)
			out.lastStep = step
			if probed && err == nil {
				out.snaps = append(out.snaps, snap)
			}
			if runErr = err; err != nil {
				break
			}
		}
		out.interrupted, out.err = ls.Finish(out.lastStep, s.rep.Checksum(), runErr)
		out.left, out.probes, out.stats = ls.Left(), mon.Stats().Probes, ls.Stats()
		return mon.Close(context.Background())
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return res, calls
}

// singleProcess probes the whole data set in one process with the same
// configuration, through the monitor's own Step.
func singleProcess(t *testing.T, steps int64, cfg monitor.Config) []snapshot.Snapshot {
	t.Helper()
	var sk sink
	mon, err := monitor.New("run", cfg, monitor.WithSink(&sk), quiet)
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= steps; step++ {
		err := mon.Step(context.Background(), monitor.StepInfo{Step: step, Loss: 1, Blocks: blocks()}, func() (hvp.Operator, error) {
			return newMeanOp(0, samples, step), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := mon.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return sk.snaps
}

func rel(a, b, scale float64) float64 {
	if a == b {
		return 0
	}
	return math.Abs(a-b) / scale
}

// The lockstep probes on 2 and 3 ranks must store, on rank 0, what one
// process probing the whole data set stores: the same schedule, HVP
// counts, warm starts, and the estimates to rounding (the all-reduce sums
// the shards' products in another order). Every rank must reach the same
// snapshot bit for bit, or the ranks' estimators could branch apart.
func TestLockstepMatchesSingleProcess(t *testing.T) {
	const steps = 40
	cfg := testConfig()
	want := singleProcess(t, steps, cfg)
	if len(want) != 4 {
		t.Fatalf("single process stored %d snapshots, want 4", len(want))
	}
	for _, size := range []int{2, 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var sk sink
			res, calls := trainRanks(t, size, steps, cfg, func(r int, s *rankSetup) {
				if r == 0 {
					s.sinks = []monitor.Option{monitor.WithSink(&sk)}
				}
			})
			sameCalls(t, calls)
			worst := 0.0
			check := func(step int64, what string, d float64) {
				t.Helper()
				worst = math.Max(worst, d)
				if !(d <= 1e-10) {
					t.Errorf("step %d %s: relative difference %.3g", step, what, d)
				}
			}
			got := sk.snaps
			if len(got) != len(want) {
				t.Fatalf("rank 0 stored %d snapshots, single process %d", len(got), len(want))
			}
			hvps := 0
			for i, w := range want {
				g := got[i]
				hvps += g.HVPs
				if w.Failure != "" || g.Failure != "" {
					t.Fatalf("step %d: failures %q (%s) / %q (%s)", w.Step, g.Failure, g.Detail, w.Failure, w.Detail)
				}
				if g.Step != w.Step || g.HVPs != w.HVPs || g.Warm != w.Warm || len(g.Eigenvalues) != len(w.Eigenvalues) {
					t.Fatalf("snapshot %d: step %d hvps %d warm %v k %d; single process step %d hvps %d warm %v k %d",
						i, g.Step, g.HVPs, g.Warm, len(g.Eigenvalues), w.Step, w.HVPs, w.Warm, len(w.Eigenvalues))
				}
				l1 := math.Abs(w.Eigenvalues[0])
				for k := range w.Eigenvalues {
					check(w.Step, fmt.Sprintf("λ%d", k+1), rel(g.Eigenvalues[k], w.Eigenvalues[k], l1))
					check(w.Step, fmt.Sprintf("residual %d", k+1), rel(g.Residuals[k], w.Residuals[k], l1))
				}
				check(w.Step, "loss", rel(g.Loss, w.Loss, math.Abs(w.Loss)))
				check(w.Step, "trace", rel(g.Trace.Value, w.Trace.Value, math.Abs(w.Trace.Value)))
				if len(g.Trace.Blocks) != 2 || g.Trace.Probes != w.Trace.Probes {
					t.Fatalf("step %d: %d block traces, %d/%d probes", w.Step, len(g.Trace.Blocks), g.Trace.Probes, w.Trace.Probes)
				}
				for k, b := range w.Trace.Blocks {
					check(w.Step, "block trace "+b.Name, rel(g.Trace.Blocks[k].Value, b.Value, math.Abs(w.Trace.Value)))
				}
				if len(g.ESD.Nodes) != len(w.ESD.Nodes) {
					t.Fatalf("step %d: ESD with %d nodes, single process %d", w.Step, len(g.ESD.Nodes), len(w.ESD.Nodes))
				}
				for k := range w.ESD.Nodes {
					check(w.Step, "ESD node", rel(g.ESD.Nodes[k], w.ESD.Nodes[k], l1))
					check(w.Step, "ESD weight", math.Abs(g.ESD.Weights[k]-w.ESD.Weights[k]))
				}
			}
			if !got[1].Warm {
				t.Error("the second probe started cold; want warm on every rank")
			}
			for r, x := range res {
				if x.err != nil || x.interrupted || x.probes != len(want) || len(x.snaps) != len(want) {
					t.Fatalf("rank %d: Finish = %v, %v; %d probes, %d snapshots", r, x.interrupted, x.err, x.probes, len(x.snaps))
				}
				for i, s := range x.snaps {
					a, b := s, got[i]
					a.Time, b.Time, a.Seconds, b.Seconds = time.Time{}, time.Time{}, 0, 0
					if !reflect.DeepEqual(a, b) {
						t.Errorf("rank %d's snapshot at step %d differs from rank 0's", r, s.Step)
					}
				}
				if x.stats.Applies != hvps {
					t.Errorf("rank %d all-reduced %d products, the snapshots count %d", r, x.stats.Applies, hvps)
				}
			}
			t.Logf("%d ranks: largest relative difference from one process %.3g", size, worst)
		})
	}
}

// A rank interrupted between probes leaves through Finish's last round,
// which meets the other ranks' next probe round: every rank stops at that
// round without error, says it was interrupted, and nothing is recorded
// after the last finished probe.
func TestCollectiveCancelBetweenProbes(t *testing.T) {
	for _, size := range []int{2, 3} {
		for slow := range size {
			t.Run(fmt.Sprintf("%d ranks, rank %d", size, slow), func(t *testing.T) {
				var sk sink
				res, calls := trainRanks(t, size, 40, testConfig(), func(r int, s *rankSetup) {
					if r == 0 {
						s.sinks = []monitor.Option{monitor.WithSink(&sk)}
					}
					if r == slow {
						ctx, cancel := context.WithCancel(context.Background())
						s.ctx = ctx
						s.before = func(step int64) error {
							if step == 15 {
								cancel()
							}
							return nil
						}
					}
				})
				sameCalls(t, calls)
				for r, x := range res {
					want := int64(20) // the next probe round
					if r == slow {
						want = 14
					}
					if x.err != nil || !x.interrupted || !x.left || x.lastStep != want || x.probes != 1 {
						t.Errorf("rank %d: Finish = %v, %v; left %v at step %d with %d probes; want interrupted, no error, left at step %d after 1 probe",
							r, x.interrupted, x.err, x.left, x.lastStep, x.probes, want)
					}
				}
				if len(sk.snaps) != 1 || sk.snaps[0].Step != 10 {
					t.Errorf("rank 0 stored %d snapshots; want only step 10's", len(sk.snaps))
				}
			})
		}
	}
}

// fireAt calls fire before the at-th local product of a probe.
type fireAt struct {
	meanOp
	at   int
	fire func()
	n    *int
}

func (f fireAt) Apply(dst, v []float64) error {
	*f.n++
	if *f.n == f.at {
		f.fire()
	}
	return f.meanOp.Apply(dst, v)
}

// A rank interrupted during a probe stops the probe on every rank at the
// same product; nothing of it is recorded (no snapshot, no warm state, no
// probe counted) and every rank leaves.
func TestCollectiveCancelDuringProbe(t *testing.T) {
	for _, size := range []int{2, 3} {
		for slow := range size {
			t.Run(fmt.Sprintf("%d ranks, rank %d", size, slow), func(t *testing.T) {
				var sk sink
				warm := &memWarm{}
				products := make([]int, size)
				res, calls := trainRanks(t, size, 40, testConfig(), func(r int, s *rankSetup) {
					if r == 0 {
						s.sinks = []monitor.Option{monitor.WithSink(&sk), monitor.WithWarmStore(warm)}
					}
					ctx, cancel := context.WithCancel(context.Background())
					s.ctx = ctx
					s.rep.wrap = func(op meanOp) hvp.Operator {
						products[r] = 0
						fire := func() {}
						if r == slow && s.rep.step == 20 {
							fire = cancel // in the second probe
						}
						return fireAt{meanOp: op, at: 7, fire: fire, n: &products[r]}
					}
				})
				sameCalls(t, calls)
				for r, x := range res {
					if x.err != nil || !x.interrupted || !x.left || x.lastStep != 20 || x.probes != 1 {
						t.Errorf("rank %d: Finish = %v, %v; left %v at step %d with %d probes; want interrupted at step 20 after 1 probe",
							r, x.interrupted, x.err, x.left, x.lastStep, x.probes)
					}
					// The slow rank's context ended during the 7th product:
					// every rank refused the 8th.
					if products[r] != 7 {
						t.Errorf("rank %d applied %d local products in the interrupted probe, want 7", r, products[r])
					}
				}
				if len(sk.snaps) != 1 || sk.snaps[0].Step != 10 {
					t.Errorf("rank 0 stored %d snapshots; want only step 10's", len(sk.snaps))
				}
				if warm.puts != 1 {
					t.Errorf("%d warm states written; want 1 (the first probe's)", warm.puts)
				}
			})
		}
	}
}

// A rank over the probe's wall-time budget stops the probe on every rank at
// the same product; it is recorded as a timeout and the run goes on.
func TestCollectiveTimeout(t *testing.T) {
	for _, size := range []int{2, 3} {
		for slow := range size {
			t.Run(fmt.Sprintf("%d ranks, rank %d", size, slow), func(t *testing.T) {
				var sk sink
				products := make([]int, size)
				var clock atomic.Int64 // the slow rank's clock, in hours past t0
				t0 := time.Now()
				res, calls := trainRanks(t, size, 30, testConfig(), func(r int, s *rankSetup) {
					if r == 0 {
						s.sinks = []monitor.Option{monitor.WithSink(&sk)}
					}
					if r == slow {
						s.ls = func(l *distributed.Lockstep) {
							distributed.SetClock(l, func() time.Time { return t0.Add(time.Duration(clock.Load()) * time.Hour) })
						}
					}
					s.rep.wrap = func(op meanOp) hvp.Operator {
						products[r] = 0
						fire := func() {}
						if r == slow && s.rep.step == 20 {
							fire = func() { clock.Add(2) } // the budget is an hour
						}
						return fireAt{meanOp: op, at: 5, fire: fire, n: &products[r]}
					}
				})
				sameCalls(t, calls)
				for r, x := range res {
					if x.err != nil || x.interrupted || x.probes != 3 || len(x.snaps) != 3 {
						t.Errorf("rank %d: Finish = %v, %v; %d probes; want 3 probes and no interruption", r, x.interrupted, x.err, x.probes)
						continue
					}
					if s := x.snaps[1]; s.Failure != snapshot.FailTimeout || s.HVPs != res[0].snaps[1].HVPs {
						t.Errorf("rank %d: step 20's probe failed %q after %d HVPs; want a timeout after rank 0's %d", r, s.Failure, s.HVPs, res[0].snaps[1].HVPs)
					}
				}
				if len(sk.snaps) != 3 || sk.snaps[1].Failure != snapshot.FailTimeout || sk.snaps[0].Failure != "" || sk.snaps[2].Failure != "" {
					t.Fatalf("rank 0 stored %d snapshots; want 3 with only step 20's a timeout", len(sk.snaps))
				}
				// The slow rank's clock jumped during the 5th product, so every
				// rank refused the 6th (which the snapshot counts, as it counts
				// every failed product).
				if h := sk.snaps[1].HVPs; h != 6 {
					t.Errorf("the timed-out probe counts %d HVPs, want 6", h)
				}
			})
		}
	}
}

// Replicas whose parameters differ at a probe round stop every rank with
// ErrDiverged, before anything is recorded.
func TestReplicaChecksumMismatch(t *testing.T) {
	for _, size := range []int{2, 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var sk sink
			res, calls := trainRanks(t, size, 40, testConfig(), func(r int, s *rankSetup) {
				if r == 0 {
					s.sinks = []monitor.Option{monitor.WithSink(&sk)}
				}
				if r == size-1 {
					s.before = func(step int64) error {
						if step == 15 {
							s.rep.params[1] = math.Nextafter(s.rep.params[1], 3) // one bit
						}
						return nil
					}
				}
			})
			sameCalls(t, calls)
			for r, x := range res {
				if !errors.Is(x.err, distributed.ErrDiverged) || !strings.Contains(x.err.Error(), fmt.Sprintf("at step 20 rank %d's", size-1)) || x.lastStep != 20 {
					t.Errorf("rank %d: err = %v at step %d; want ErrDiverged at step 20 naming rank %d", r, x.err, x.lastStep, size-1)
				}
			}
			if len(sk.snaps) != 1 {
				t.Errorf("rank 0 stored %d snapshots; want only step 10's", len(sk.snaps))
			}
		})
	}
}

// A rank that cannot build its operator makes the probe fail on every rank
// (recorded on rank 0), and the run goes on; a rank whose loop fails stops
// every rank at its next round, and the others name it.
func TestRankFailures(t *testing.T) {
	for _, size := range []int{2, 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			var sk sink
			res, calls := trainRanks(t, size, 20, testConfig(), func(r int, s *rankSetup) {
				if r == 0 {
					s.sinks = []monitor.Option{monitor.WithSink(&sk)}
				}
				if r == size-1 {
					s.rep.buildErr = errors.New("out of memory")
				}
			})
			sameCalls(t, calls)
			if len(sk.snaps) != 2 || sk.snaps[0].Failure == "" || !strings.Contains(sk.snaps[0].Detail, "building the HVP operator") {
				t.Fatalf("rank 0 stored %d snapshots (%+v); want 2 recorded failures", len(sk.snaps), sk.snaps)
			}
			for r, x := range res {
				if x.err != nil || x.probes != 2 {
					t.Errorf("rank %d: %v, %d probes; want the run to go on", r, x.err, x.probes)
				}
			}

			loopErr := errors.New("loss diverged")
			res, calls = trainRanks(t, size, 40, testConfig(), func(r int, s *rankSetup) {
				if r == 1 {
					s.before = func(step int64) error {
						if step == 13 {
							return loopErr
						}
						return nil
					}
				}
			})
			sameCalls(t, calls)
			for r, x := range res {
				switch {
				case r == 1 && !errors.Is(x.err, loopErr):
					t.Errorf("rank 1: err = %v, want its own %v", x.err, loopErr)
				case r != 1 && (!errors.Is(x.err, distributed.ErrPeerFailed) || !strings.Contains(x.err.Error(), "step 20 because rank 1 failed")):
					t.Errorf("rank %d: err = %v; want ErrPeerFailed at its next round (step 20) naming rank 1", r, x.err)
				}
			}
		})
	}
}
