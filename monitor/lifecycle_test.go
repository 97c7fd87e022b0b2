package monitor

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// gatedOp is a fake operator: every Apply waits for a token on gate (nil:
// no wait), counts itself, and reports when it started.
type gatedOp struct {
	hvp.Operator
	gate    chan struct{}
	started chan struct{} // receives once, at the first Apply
	once    sync.Once
	applies atomic.Int64
	workers atomic.Int64
	closed  atomic.Bool
}

func newGatedOp(op hvp.Operator, gated bool) *gatedOp {
	g := &gatedOp{Operator: op, started: make(chan struct{})}
	if gated {
		g.gate = make(chan struct{})
	}
	g.workers.Store(-1)
	return g
}

func (g *gatedOp) Apply(dst, v []float64) error {
	g.once.Do(func() { close(g.started) })
	if g.gate != nil {
		<-g.gate
	}
	g.applies.Add(1)
	return g.Operator.Apply(dst, v)
}

func (g *gatedOp) SetWorkers(n int) { g.workers.Store(int64(n)) }
func (g *gatedOp) Close() error     { g.closed.Store(true); return nil }

// fakeFactory hands out the same kind of operator at every due step and
// records how often it was called.
type fakeFactory struct {
	mu    sync.Mutex
	calls []int64
	make  func() *gatedOp
	ops   []*gatedOp
}

func (f *fakeFactory) at(step int64) OperatorFunc {
	return func() (hvp.Operator, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls = append(f.calls, step)
		op := f.make()
		f.ops = append(f.ops, op)
		return op, nil
	}
}

// TestStepAsyncRunsAndSkipsWhenBusy drives the core with a fake operator
// factory: the factory is called only on due steps, Step returns while the
// probe runs, due steps that find a probe in flight are skipped and
// counted, and Close hands the last probe every core and waits for it.
func TestStepAsyncRunsAndSkipsWhenBusy(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(40), 7))
	f := &fakeFactory{make: func() *gatedOp { return newGatedOp(dense, true) }}
	sink := &memSink{}
	m, err := New("r", Config{Every: 2, Async: true, TopK: 1, NoTrace: true, NoESD: true}, WithSink(sink), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for step := int64(1); step <= 10; step++ {
		if err := m.Step(ctx, StepInfo{Step: step, Loss: 1, LearningRate: 0.1, Optimizer: snapshot.SGD}, f.at(step)); err != nil {
			t.Fatal(err)
		}
		if step == 2 {
			<-f.ops[0].started // the first probe is running (and blocked)
		}
	}
	// Steps 2..10 had 5 due steps: the first started a light probe, the
	// second queued one behind it (its operator built at step 4), the
	// other 3 found the slot and its queue taken. (Before light probes:
	// one probe, 4 skipped.)
	if got := m.Stats(); got.Skipped != 3 || got.Probes != 0 || got.Due != 5 {
		t.Fatalf("while the probe is blocked: stats %+v, want 5 due, 3 skipped, 0 finished", got)
	}
	if len(f.calls) != 2 || f.calls[0] != 2 || f.calls[1] != 4 {
		t.Fatalf("factory called at %v, want only at steps 2 and 4", f.calls)
	}
	op := f.ops[0]
	if w := op.workers.Load(); w != 1 {
		t.Errorf("in-flight probe has %d workers while training runs, want 1", w)
	}
	done := make(chan error, 1)
	go func() { done <- m.Close(ctx) }()
	// Close must hand the probe every core before it waits, and the queued
	// one gets every core when it starts.
	for op.workers.Load() != 0 {
		time.Sleep(time.Millisecond)
	}
	close(op.gate) // let the probes finish
	close(f.ops[1].gate)
	if err := <-done; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := m.Stats(); got.Probes != 2 || got.Skipped != 3 {
		t.Errorf("after Close: stats %+v", got)
	}
	if len(sink.snaps) != 2 || sink.snaps[0].Step != 2 || sink.snaps[1].Step != 4 || sink.snaps[0].Failed() {
		t.Errorf("snapshots %+v, want good probes of steps 2 and 4, in order", sink.snaps)
	}
	if w := f.ops[1].workers.Load(); w != 0 {
		t.Errorf("the queued probe started after Close with %d workers, want 0", w)
	}
	if !op.closed.Load() {
		t.Error("the operator was not closed after its probe")
	}
	if err := m.Step(ctx, StepInfo{Step: 12}, f.at(12)); !errors.Is(err, ErrClosed) {
		t.Errorf("Step after Close: %v, want ErrClosed", err)
	}
}

// TestCloseCancelsInFlightProbe: Close with a context that ends stops the
// in-flight probe within one HVP, records nothing, and says so.
func TestCloseCancelsInFlightProbe(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(60), 8))
	f := &fakeFactory{make: func() *gatedOp { return newGatedOp(dense, true) }}
	sink := &memSink{}
	m, _ := New("r", Config{Every: 1, Async: true, TopK: 3}, WithSink(sink), WithLogger(discardLogger()))
	if err := m.Step(context.Background(), StepInfo{Step: 1}, f.at(1)); err != nil {
		t.Fatal(err)
	}
	op := f.ops[0]
	<-op.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.mu.Lock()
	probeCtx := m.inFlight.ctx
	m.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- m.Close(ctx) }()
	<-probeCtx.Done() // Close has cancelled the probe
	// Release products one at a time: the estimator must stop at its next
	// cancellation check, i.e. after the product in progress.
	var released int64
	for {
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Close: %v, want context.Canceled", err)
			}
			if n := op.applies.Load(); n != 1 {
				t.Errorf("%d HVPs completed after a cancelled Close, want 1 (the one in progress)", n)
			}
			if len(sink.snaps) != 0 {
				t.Errorf("a cancelled probe was recorded: %+v", sink.snaps)
			}
			t.Logf("released %d products, %d completed", released, op.applies.Load())
			return
		case op.gate <- struct{}{}:
			released++
		}
	}
}

// TestCloseFinishesProbeAndSavesWarm: Close with a live context waits for
// the probe, and writes the newest warm state even when the write rate
// would not have yet.
func TestCloseFinishesProbeAndSavesWarm(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(40), 9))
	ws := &memWarm{}
	// FullEvery 1: a full probe (the budget's first probe is a light one,
	// whose warm state is not persisted).
	m, _ := New("r", Config{Every: 1, Async: true, FullEvery: 1, TopK: 2, NoTrace: true, NoESD: true, WarmEvery: 100, WarmInterval: time.Hour},
		WithWarmStore(ws), WithLogger(discardLogger()))
	ctx := context.Background()
	op := func() (hvp.Operator, error) { return dense, nil }
	if err := m.Step(ctx, StepInfo{Step: 1}, op); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if m.Stats().Probes != 1 {
		t.Fatalf("stats %+v", m.Stats())
	}
	// The first good probe is written at once (a resumed run has something
	// to start from); Close has nothing newer to write.
	if ws.puts != 1 || len(ws.state) == 0 {
		t.Errorf("warm writes %d, want 1", ws.puts)
	}
}

// TestWarmWriteRate: with WarmEvery K the warm state is written after the
// first probe, then every K probes, and at Close.
func TestWarmWriteRate(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(40), 10))
	ws := &memWarm{}
	m, _ := New("r", Config{Every: 1, TopK: 2, NoTrace: true, NoESD: true, WarmEvery: 4, WarmInterval: time.Hour},
		WithWarmStore(ws), WithLogger(discardLogger()))
	ctx := context.Background()
	for step := int64(1); step <= 10; step++ {
		if err := m.Step(ctx, StepInfo{Step: step}, func() (hvp.Operator, error) { return dense, nil }); err != nil {
			t.Fatal(err)
		}
	}
	// probes 1 (first), 5, 9
	if ws.puts != 3 {
		t.Errorf("%d warm writes after 10 probes with WarmEvery 4, want 3", ws.puts)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ws.puts != 4 {
		t.Errorf("%d warm writes after Close, want 4", ws.puts)
	}
}

type memWarm struct {
	mu    sync.Mutex
	state []byte
	puts  int
}

func (w *memWarm) PutWarm(_ string, b []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state, w.puts = append([]byte(nil), b...), w.puts+1
	return nil
}

func (w *memWarm) Warm(string) ([]byte, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, nil
}

// fakeClock advances only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// clockedOp advances the fake clock by cost at every product, so that a
// probe's cost is exact.
type clockedOp struct {
	hvp.Operator
	clock *fakeClock
	cost  time.Duration
}

func (o clockedOp) Apply(dst, v []float64) error {
	o.clock.advance(o.cost)
	return o.Operator.Apply(dst, v)
}
