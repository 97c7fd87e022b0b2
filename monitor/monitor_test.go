package monitor

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// spectrumMatrix returns Q·diag(λ)·Qᵀ for a seeded random orthogonal Q.
func spectrumMatrix(lambda []float64, seed uint64) *mat.SymDense {
	n := len(lambda)
	rng := rand.New(rand.NewPCG(seed, 1))
	a := mat.NewDense(n, n, nil)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			a.Set(i, j, rng.NormFloat64())
		}
	}
	var qr mat.QR
	qr.Factorize(a)
	var q mat.Dense
	qr.QTo(&q)
	s := mat.NewSymDense(n, nil)
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			var v float64
			for k := 0; k < n; k++ {
				v += q.At(i, k) * lambda[k] * q.At(j, k)
			}
			s.SetSym(i, j, v)
		}
	}
	return s
}

func testSpectrum(n int) []float64 {
	l := make([]float64, n)
	for i := range l {
		l[i] = 10 * math.Pow(0.85, float64(i))
		if i%7 == 3 {
			l[i] = -l[i] / 4
		}
	}
	return l
}

// memSink records snapshots.
type memSink struct {
	mu    sync.Mutex
	snaps []snapshot.Snapshot
}

func (m *memSink) PutSnapshot(s snapshot.Snapshot) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snaps = append(m.snaps, s)
	return nil
}

func TestProbeMatchesTruth(t *testing.T) {
	lambda := testSpectrum(120)
	op := hvp.NewDense(spectrumMatrix(lambda, 1))
	sink := &memSink{}
	m, err := New("r", Config{TopK: 3, EigenTol: 1e-10, MaxHVPs: 2000, TraceRelTol: 0.05}, WithSink(sink))
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Probe(context.Background(), 10, op, StepInfo{LearningRate: 0.1, Optimizer: snapshot.SGD})
	if err != nil {
		t.Fatal(err)
	}
	if s.Failed() {
		t.Fatalf("probe failed: %s %s", s.Failure, s.Detail)
	}
	var tr float64
	for _, l := range lambda {
		tr += l
	}
	for i, want := range []float64{lambda[0], lambda[1], lambda[2]} {
		if math.Abs(s.Eigenvalues[i]-want) > 1e-8*lambda[0] {
			t.Errorf("λ%d = %v, want %v", i+1, s.Eigenvalues[i], want)
		}
		if math.Abs(s.Eigenvalues[i]-want) > s.Residuals[i]+1e-12 {
			t.Errorf("λ%d error %g exceeds its residual %g", i+1, math.Abs(s.Eigenvalues[i]-want), s.Residuals[i])
		}
	}
	if s.Trace == nil || math.Abs(s.Trace.Value-tr) > 4*s.Trace.StdErr+1e-9 {
		t.Errorf("trace %+v, want %v", s.Trace, tr)
	}
	if s.ESD == nil || len(s.ESD.Nodes) != s.ESD.Probes*s.ESD.Steps {
		t.Errorf("ESD missing or malformed: %+v", s.ESD)
	}
	if want := lambda[0] * 0.1 / 2; math.Abs(s.SharpnessRatio-want) > 1e-8 {
		t.Errorf("sharpness ratio %v, want λ1·η/2 = %v", s.SharpnessRatio, want)
	}
	if len(sink.snaps) != 1 || sink.snaps[0].Step != 10 {
		t.Errorf("sink got %d snapshots", len(sink.snaps))
	}
}

func TestSharpnessThreshold(t *testing.T) {
	if got := SharpnessThreshold(snapshot.SGD, 0.1, 0); got != 20 {
		t.Errorf("SGD threshold %v, want 2/η = 20", got)
	}
	if got := SharpnessThreshold(snapshot.Adam, 0.1, 0.9); math.Abs(got-380) > 1e-9 {
		t.Errorf("Adam threshold %v, want 38/η = 380", got)
	}
}

type nanOp struct{ n int }

func (o nanOp) Dim() int { return o.n }
func (o nanOp) Apply(dst, v []float64) error {
	copy(dst, v)
	dst[0] = math.NaN()
	return nil
}

type panicOp struct{ n int }

func (o panicOp) Dim() int                   { return o.n }
func (o panicOp) Apply(_, _ []float64) error { panic("boom") }

type slowOp struct{ hvp.Operator }

func (o slowOp) Apply(dst, v []float64) error {
	time.Sleep(20 * time.Millisecond)
	return o.Operator.Apply(dst, v)
}

// TestFailureIsolation: NaN, panic, timeout and budget overruns become
// failure snapshots, are handed to the sinks and do not return errors.
func TestFailureIsolation(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(60), 2))
	cases := []struct {
		name string
		op   hvp.Operator
		cfg  Config
		want snapshot.Failure
	}{
		{"nan", nanOp{60}, Config{}, snapshot.FailNaN},
		{"panic", panicOp{60}, Config{}, snapshot.FailPanic},
		{"timeout", slowOp{dense}, Config{MaxDuration: 50 * time.Millisecond}, snapshot.FailTimeout},
		{"budget", dense, Config{MaxHVPs: 40, EigenTol: 1e-14, NoESD: true}, snapshot.FailBudget},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink := &memSink{}
			m, err := New("r", c.cfg, WithSink(sink), WithLogger(discardLogger()))
			if err != nil {
				t.Fatal(err)
			}
			s, err := m.Probe(context.Background(), 5, c.op, StepInfo{})
			if err != nil {
				t.Fatalf("Probe returned an error for a failing probe: %v", err)
			}
			if s.Failure != c.want {
				t.Errorf("failure %q (%s), want %q", s.Failure, s.Detail, c.want)
			}
			if len(sink.snaps) != 1 || sink.snaps[0].Failure != c.want {
				t.Errorf("sink did not receive the failure snapshot: %+v", sink.snaps)
			}
			if st := m.Stats(); st.Failures != 1 {
				t.Errorf("stats %+v, want 1 failure", st)
			}
		})
	}
}

// TestResumeStartsWarm: a second monitor on the same store and run id loads
// the warm state, so its first probe is warm and cheaper than a cold one.
func TestResumeStartsWarm(t *testing.T) {
	path := t.TempDir() + "/h.db"
	lambda := testSpectrum(200)
	a := spectrumMatrix(lambda, 3)
	cfg := Config{TopK: 5, EigenTol: 1e-8, NoTrace: true, NoESD: true, MaxHVPs: 2000}
	st, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := New("run", cfg, WithSink(st), WithWarmStore(st))
	s1, err := m1.Probe(context.Background(), 100, hvp.NewDense(a), StepInfo{})
	if err != nil || s1.Failed() || s1.Warm {
		t.Fatalf("first probe: %+v, %v", s1, err)
	}
	st.Close()

	// A slightly changed Hessian, as after a few more training steps.
	b := mat.NewSymDense(len(lambda), nil)
	e := spectrumMatrix(testSpectrum(len(lambda)), 4)
	for i := 0; i < len(lambda); i++ {
		for j := i; j < len(lambda); j++ {
			b.SetSym(i, j, a.At(i, j)+1e-4*e.At(i, j))
		}
	}
	cold, _ := New("other", cfg)
	sc, err := cold.Probe(context.Background(), 150, hvp.NewDense(b), StepInfo{})
	if err != nil || sc.Failed() {
		t.Fatal(err, sc.Failure)
	}
	st, err = store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m2, err := New("run", cfg, WithSink(st), WithWarmStore(st))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := m2.Probe(context.Background(), 150, hvp.NewDense(b), StepInfo{})
	if err != nil || s2.Failed() {
		t.Fatal(err, s2.Failure)
	}
	t.Logf("resumed warm probe: %d HVPs; cold probe of the same operator: %d HVPs", s2.HVPs, sc.HVPs)
	if !s2.Warm {
		t.Error("resumed run's first probe is not warm")
	}
	if s2.HVPs >= sc.HVPs {
		t.Errorf("warm resumed probe spent %d HVPs, cold %d", s2.HVPs, sc.HVPs)
	}
	for i := range sc.Eigenvalues {
		if math.Abs(s2.Eigenvalues[i]-sc.Eigenvalues[i]) > 1e-6*math.Abs(sc.Eigenvalues[0]) {
			t.Errorf("λ%d warm %v, cold %v", i+1, s2.Eigenvalues[i], sc.Eigenvalues[i])
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	if _, err := New("", Config{}); err == nil {
		t.Error("empty run id accepted")
	}
	if _, err := New("r", Config{Budget: 1.5}); err == nil {
		t.Error("overhead target 1.5 accepted")
	}
}

func TestCancelledProbeIsNotRecorded(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(60), 2))
	sink := &memSink{}
	m, _ := New("r", Config{}, WithSink(sink), WithLogger(discardLogger()))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Probe(ctx, 5, slowOp{dense}, StepInfo{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if len(sink.snaps) != 0 {
		t.Errorf("a cancelled probe was recorded: %+v", sink.snaps)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestTraceMaxHVPs: the trace stops at its own budget, is no failure, and
// still covers the truth within its reported standard error.
func TestTraceMaxHVPs(t *testing.T) {
	lambda := testSpectrum(150)
	var tr float64
	for _, l := range lambda {
		tr += l
	}
	for _, capHVPs := range []int{12, 25} {
		m, err := New("r", Config{TopK: 2, TraceRelTol: 1e-9, TraceMaxHVPs: capHVPs, NoESD: true, MaxHVPs: 1000}, WithLogger(discardLogger()))
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.Probe(context.Background(), 1, hvp.NewDense(spectrumMatrix(lambda, 3)), StepInfo{})
		if err != nil || s.Failed() {
			t.Fatalf("cap %d: err %v, failure %q %s", capHVPs, err, s.Failure, s.Detail)
		}
		if s.Trace.Probes > capHVPs || s.Trace.Probes < capHVPs/2 {
			t.Errorf("cap %d: %d trace probes", capHVPs, s.Trace.Probes)
		}
		if math.Abs(s.Trace.Value-tr) > 5*s.Trace.StdErr {
			t.Errorf("cap %d: trace %v ± %v, truth %v", capHVPs, s.Trace.Value, s.Trace.StdErr, tr)
		}
	}
}
