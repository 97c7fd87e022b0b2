package gomlx

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"

	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
)

// cycleDS yields copies of a few fixed batches forever (the loop frees
// what it is given).
type cycleDS struct {
	inputs, labels [][]*tensors.Tensor
	i              int
}

func (d *cycleDS) Name() string { return "cycle" }
func (d *cycleDS) Reset()       { d.i = 0 }
func (d *cycleDS) Yield() (spec any, inputs, labels []*tensors.Tensor, err error) {
	k := d.i % len(d.inputs)
	d.i++
	clone := func(ts []*tensors.Tensor) []*tensors.Tensor {
		out := make([]*tensors.Tensor, len(ts))
		for i, t := range ts {
			if out[i], err = t.LocalClone(); err != nil {
				return nil
			}
		}
		return out
	}
	return nil, clone(d.inputs[k]), clone(d.labels[k]), err
}

// recorder is a monitor sink and training observer.
type recorder struct {
	mu     sync.Mutex
	snaps  []snapshot.Snapshot
	losses map[int64]float64
}

func (r *recorder) PutSnapshot(s snapshot.Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, s)
	return nil
}

func (r *recorder) ObserveTraining(_ string, step int64, loss, _ float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.losses == nil {
		r.losses = map[int64]float64{}
	}
	r.losses[step] = loss
}

// paramBits returns the trainable variables' values as bits, by name.
func paramBits(t *testing.T, ctx *mlctx.Context) map[string][]uint64 {
	t.Helper()
	out := map[string][]uint64{}
	for v := range ctx.IterVariables() {
		if !v.Trainable {
			continue
		}
		val, err := v.Value()
		must(t, err)
		flat, err := tensors.CopyFlatData[float64](val)
		must(t, err)
		bits := make([]uint64, len(flat))
		for i, x := range flat {
			bits[i] = math.Float64bits(x)
		}
		out[v.ScopeAndName()] = bits
	}
	return out
}

// trainLoop trains m for steps steps on a simplego training backend made
// with config, with the monitor
// attached if mon is set. With shared, the probes run on the training
// backend, else on the Operator's private one.
func trainLoop(t *testing.T, m testModel, steps int, mon *monitor.Monitor, config string, shared bool) *mlctx.Context {
	t.Helper()
	backend, err := simplego.New(config)
	must(t, err)
	t.Cleanup(backend.Finalize)
	ctx := mlctx.New()
	must(t, ctx.SetRNGStateFromSeed(42))
	if m.setup != nil {
		m.setup(ctx)
	}
	tr := train.NewTrainer(backend, ctx, m.model, m.loss,
		optimizers.StochasticGradientDescent().WithLearningRate(0.1).Done(), nil, nil)
	loop := train.NewLoop(tr)
	// Two batches: the probe batch is the first.
	r := rand.New(rand.NewPCG(21, 22))
	second := make([]*tensors.Tensor, len(m.inputs))
	for i, in := range m.inputs {
		c, err := in.LocalClone()
		must(t, err)
		if c.DType().IsFloat() {
			tensors.MustMutableFlatData(c, func(f []float64) {
				for j := range f {
					f[j] += 0.3 * r.NormFloat64()
				}
			})
		}
		second[i] = c
	}
	ds := &cycleDS{inputs: [][]*tensors.Tensor{m.inputs, second}, labels: [][]*tensors.Tensor{m.labels, m.labels}}
	if mon != nil {
		var probeBackend backends.Backend
		if shared {
			probeBackend = backend
		}
		_, err := Attach(context.Background(), loop, mon, AttachOptions{
			Config:    Config{Model: m.model, Loss: m.loss, Inputs: m.inputs, Labels: m.labels, Backend: probeBackend},
			Optimizer: snapshot.SGD,
		})
		must(t, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := loop.RunSteps(ds, steps)
		done <- err
	}()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(2 * time.Minute): // a hang detector, not a speed limit
		t.Fatal("training with the monitor attached hung (simplego worker-pool deadlock?)")
	}
	return ctx
}

// TestAttachBitwise trains with and without the hook (asynchronous probes
// every 4 steps) and requires bitwise-identical parameters, probes recorded
// at the right steps, and every step's loss seen by the training observer.
func TestAttachBitwise(t *testing.T) {
	const steps = 24
	for _, m := range testModels() {
		if m.name != "dense-l2" && m.name != "attention" {
			continue
		}
		for _, async := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/async=%v", m.name, async), func(t *testing.T) {
				plain := paramBits(t, trainLoop(t, m, steps, nil, "ops_sequential", false))
				rec := &recorder{}
				mon, err := monitor.New("test", monitor.Config{Every: 4, Async: async, FullEvery: 1, TopK: 2, ESDSteps: 8, TraceMaxHVPs: 8}, monitor.WithSink(rec))
				must(t, err)
				watched := paramBits(t, trainLoop(t, m, steps, mon, "ops_sequential", false))
				if len(plain) != len(watched) {
					t.Fatalf("%d variables without the hook, %d with", len(plain), len(watched))
				}
				for name, a := range plain {
					b := watched[name]
					for i := range a {
						if a[i] != b[i] {
							t.Fatalf("%s[%d]: %g without the hook, %g with", name, i, math.Float64frombits(a[i]), math.Float64frombits(b[i]))
						}
					}
				}
				rec.mu.Lock()
				defer rec.mu.Unlock()
				if len(rec.snaps) == 0 {
					t.Fatal("no snapshot recorded")
				}
				for _, s := range rec.snaps {
					full := !s.IsLight() // a due step that finds the full probe running gets a light one
					if s.Step%4 != 0 || s.Failure != "" || len(s.Eigenvalues) == 0 || s.LearningRate != 0.1 || (full && (s.Trace == nil || len(s.Trace.Blocks) == 0)) {
						t.Errorf("snapshot at step %d: failure %q %s", s.Step, s.Failure, s.Detail)
					}
				}
				for step := int64(1); step <= steps; step++ {
					if l, ok := rec.losses[step]; !ok || !(l > 0) {
						t.Errorf("step %d: training loss %v observed %v", step, l, ok)
					}
				}
				if !async && len(rec.snaps) != steps/4 {
					t.Errorf("%d synchronous snapshots, want %d", len(rec.snaps), steps/4)
				}
				t.Logf("%d snapshots, bitwise-identical parameters", len(rec.snaps))
			})
		}
	}
}

// TestSharedBackendNoDeadlock runs asynchronous probes of the attention
// model on the training backend itself while training runs. simplego
// v0.26.0 with its default parallel ops deadlocks on such graphs on a
// 2-core machine, even its own training step with no probe (DotGeneral waits
// for worker-pool slots from inside a pool task; reproduce with
// HESSMON_GOMLX_DEADLOCK=1 go test -count=20 -run SharedBackend). So the
// backend is made with "ops_sequential", the setting the docs recommend
// ("parallelism=-1", no pool limit, avoids the deadlock too, but the race
// detector then reports data races inside simplego's parallel executor).
// The hang detector in trainLoop fails the test.
func TestSharedBackendNoDeadlock(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	config := "ops_sequential"
	if os.Getenv("HESSMON_GOMLX_DEADLOCK") == "1" {
		config = "" // reproduce the deadlock
	}
	m := testModels()[6] // attention: wide graphs, many DotGenerals
	if m.name != "attention" {
		t.Fatalf("test model 6 is %s", m.name)
	}
	rec := &recorder{}
	mon, err := monitor.New("test", monitor.Config{Every: 2, Async: true, TopK: 3, ESDSteps: 8, TraceMaxHVPs: 8}, monitor.WithSink(rec))
	must(t, err)
	trainLoop(t, m, 300, mon, config, true)
	if len(rec.snaps) == 0 {
		t.Fatal("no snapshot")
	}
	t.Logf("%d snapshots", len(rec.snaps))
}

// TestAdamPreconditioner checks the P handed to the monitor against Adam's
// own update: θ_t − θ_{t−1} = −η·m_t / P, with m_t read from GoMLX's first
// moment, and that probes then carry λ1(P⁻¹H).
func TestAdamPreconditioner(t *testing.T) {
	m := testModels()[0]
	backend := newBackend(t)
	ctx := mlctx.New()
	must(t, ctx.SetRNGStateFromSeed(3))
	const lr = 0.01
	tr := train.NewTrainer(backend, ctx, m.model, m.loss, optimizers.Adam().LearningRate(lr).Done(), nil, nil)
	loop := train.NewLoop(tr)
	rec := &recorder{}
	mon, err := monitor.New("adam", monitor.Config{Every: 3, TopK: 2, ESDSteps: 8, TraceMaxHVPs: 8}, monitor.WithSink(rec))
	must(t, err)
	a, err := Attach(context.Background(), loop, mon, AttachOptions{
		Config:    Config{Model: m.model, Loss: m.loss, Inputs: m.inputs, Labels: m.labels},
		Optimizer: snapshot.Adam, Beta1: 0.9, Adam: &AdamParams{},
	})
	must(t, err)
	var prev []float64
	checked := 0
	loop.OnStep("check", train.Priority(1), func(l *train.Loop, _ []*tensors.Tensor) error {
		live := l.Trainer.Context()
		if a.op == nil {
			return nil
		}
		theta := make([]float64, a.op.Dim())
		m1 := make([]float64, a.op.Dim())
		blocks := a.op.VariableBlocks()
		for i, v := range a.op.Variables() {
			b := blocks[i]
			must(t, copyOut(theta[b.Offset:b.Offset+b.Len], live.GetVariableByScopeAndName(v.Scope(), v.Name())))
			must(t, copyOut(m1[b.Offset:b.Offset+b.Len], live.GetVariableByScopeAndName("/"+optimizers.AdamDefaultScope+v.Scope(), v.Name()+"_1st_moment")))
		}
		if prev != nil {
			p, err := a.adamPreconditioner(live)
			must(t, err)
			worst := 0.0
			for i := range p {
				d := theta[i] - prev[i]
				if math.Abs(d) < 1e-6*lr {
					continue
				}
				want := -lr * m1[i] / d
				worst = max(worst, math.Abs(p[i]-want)/want)
			}
			if worst > 1e-8 {
				t.Errorf("step %d: P differs from Adam's own update by %.2g relative", l.Trainer.GlobalStep(), worst)
			}
			checked++
		}
		prev = theta
		return nil
	})
	ds := &cycleDS{inputs: [][]*tensors.Tensor{m.inputs}, labels: [][]*tensors.Tensor{m.labels}}
	_, err = loop.RunSteps(ds, 9)
	must(t, err)
	if checked == 0 {
		t.Fatal("nothing checked")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.snaps) != 3 {
		t.Fatalf("%d snapshots, want 3", len(rec.snaps))
	}
	for _, s := range rec.snaps {
		if s.Failure != "" || s.PreconditionedLambda1 == nil || !(s.PreconditionedLambda1.Value > 0) {
			t.Errorf("step %d: failure %q, preconditioned λ1 %+v", s.Step, s.Failure, s.PreconditionedLambda1)
		}
	}
	t.Logf("checked P on %d steps; λ1(P⁻¹H) at step %d: %.6g", checked, rec.snaps[2].Step, rec.snaps[2].PreconditionedLambda1.Value)
}
