package monitor

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/snapshot"
)

// TestLightProbesMatchTruth takes light probes along a drifting Hessian
// (H_t = H_0 + t·E, a smooth "training run") and recomputes λ1 and λmin
// of the same matrix densely (EigenSym): each light value must lie within
// its own residual of the truth, the certificate it claims.
func TestLightProbesMatchTruth(t *testing.T) {
	const n, steps = 60, 30
	h0 := spectrumMatrix(testSpectrum(n), 11)
	rng := rand.New(rand.NewPCG(12, 1))
	e := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			e.SetSym(i, j, 0.02*rng.NormFloat64())
		}
	}
	at := func(step int64) *mat.SymDense {
		h := mat.NewSymDense(n, nil)
		for i := range n {
			for j := i; j < n; j++ {
				h.SetSym(i, j, h0.At(i, j)+float64(step)*e.At(i, j))
			}
		}
		return h
	}
	sink := &memSink{}
	m, err := New("r", Config{Every: 1, LightOnly: true}, WithSink(sink), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	warmHVPs, warm := 0, 0
	for step := int64(1); step <= steps; step++ {
		h := at(step)
		if err := m.Step(ctx, StepInfo{Step: step, LearningRate: 0.01, Optimizer: snapshot.SGD}, func() (hvp.Operator, error) { return hvp.NewDense(h), nil }); err != nil {
			t.Fatal(err)
		}
		s := sink.snaps[len(sink.snaps)-1]
		if s.Kind != snapshot.KindLight || s.Reason != snapshot.ReasonScheduled || s.Failed() {
			t.Fatalf("step %d: kind %q reason %q failure %q", step, s.Kind, s.Reason, s.Failure)
		}
		var es mat.EigenSym
		if !es.Factorize(h, false) {
			t.Fatal("EigenSym failed")
		}
		vals := es.Values(nil) // ascending
		l1, lmin := vals[n-1], vals[0]
		if d := math.Abs(s.Eigenvalues[0] - l1); d > s.Residuals[0]+1e-12 {
			t.Errorf("step %d: light λ1 %.10g, truth %.10g: off by %.3g > residual %.3g", step, s.Eigenvalues[0], l1, d, s.Residuals[0])
		}
		if d := math.Abs(s.LambdaMin.Value - lmin); d > s.LambdaMin.Residual+1e-12 {
			t.Errorf("step %d: light λmin %.10g, truth %.10g: off by %.3g > residual %.3g", step, s.LambdaMin.Value, lmin, d, s.LambdaMin.Residual)
		}
		if s.Residuals[0] > 1e-3*l1 {
			t.Errorf("step %d: λ1 residual %.3g over the light tolerance 1e-3·λ1 = %.3g", step, s.Residuals[0], 1e-3*l1)
		}
		if s.Warm {
			warm++
			warmHVPs += s.HVPs
		}
	}
	if warm < steps-2 {
		t.Errorf("%d of %d light probes warm", warm, steps)
	}
	t.Logf("warm light probes: %d, mean %.2f HVPs", warm, float64(warmHVPs)/float64(max(1, warm)))
	if st := m.Stats(); st.Light != steps || st.Full != 0 || st.Measured != steps || st.Due != steps {
		t.Errorf("stats %+v", st)
	}
}

// TestTriggers scripts the spectrum of a dense operator step by step (λ1
// and λmin of fixed eigenvectors) and checks that each trigger brings a
// full probe forward exactly when its rule holds, and once for a state
// that persists.
func TestTriggers(t *testing.T) {
	rest := []float64{8, 6, 4, 3, 2, 1.5, 1, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01}
	type step struct {
		l1, lmin float64
		nan      bool
		kind     snapshot.Kind
		reason   snapshot.Reason
	}
	F, L := snapshot.KindFull, snapshot.KindLight
	sched, none := snapshot.ReasonScheduled, snapshot.ReasonScheduled
	script := []step{
		{10, -0.2, false, F, sched},                            // 1: the fixed schedule's first full probe; threshold 20: ratio 0.5
		{10.5, -0.2, false, L, none},                           // 2: +5%
		{12, -0.2, false, L, none},                             // 3: +20%: no jump yet
		{13, -0.2, false, L, none},                             // 4: +30% since step 1: jump
		{13, -0.2, false, F, snapshot.ReasonJump},              // 5
		{13, -0.2, false, L, none},                             // 6
		{13, -2.0, false, L, none},                             // 7: |λmin|/λ1 = 0.15
		{13, -2.0, false, F, snapshot.ReasonNegativeCurvature}, // 8
		{13, -2.0, false, L, none},                             // 9: persists: no fire
		{13, -0.3, false, L, none},                             // 10: 0.023 < 0.05 re-arms
		{13, -2.0, false, L, none},                             // 11: again
		{13, -2.0, false, F, snapshot.ReasonNegativeCurvature}, // 12
		{16.5, -0.2, false, L, none},                           // 13: ratio 0.825 (and +27%): threshold first
		{16.5, -0.2, false, F, snapshot.ReasonThreshold},       // 14
		{15.5, -0.2, false, L, none},                           // 15: 0.775, within 5% of 0.8: stays
		{15, -0.2, false, L, none},                             // 16: 0.75: left the band
		{15, -0.2, false, F, snapshot.ReasonThreshold},         // 17
		{15, -0.2, true, L, none},                              // 18: NaN: failure
		{15, -0.2, true, F, snapshot.ReasonFailure},            // 19: still NaN: the full probe fails too
		{15, -0.2, true, L, none},                              // 20: the failure persists: no fire
		{15, -0.2, false, L, none},                             // 21: good again: re-armed
		{15, -0.2, true, L, none},                              // 22: fails again
		{15, -0.2, false, F, snapshot.ReasonFailure},           // 23
		{15.5, -0.2, false, L, none},                           // 24: nothing
	}
	sink := &memSink{}
	cfg := Config{Every: 1, FullEvery: 1000, TopK: 2, NoTrace: true, NoESD: true}
	m, err := New("r", cfg, WithSink(sink), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, sc := range script {
		lambda := append([]float64{sc.l1}, rest...)
		lambda = append(lambda, sc.lmin)
		var op hvp.Operator = hvp.NewDense(spectrumMatrix(lambda, 21))
		if sc.nan {
			op = nanOp{len(lambda)}
		}
		info := StepInfo{Step: int64(i + 1), LearningRate: 0.1, Optimizer: snapshot.SGD} // threshold 2/η = 20
		if err := m.Step(ctx, info, func() (hvp.Operator, error) { return op, nil }); err != nil {
			t.Fatal(err)
		}
		s := sink.snaps[len(sink.snaps)-1]
		if s.Step != info.Step || s.Kind != sc.kind || s.Reason != sc.reason {
			t.Errorf("step %d: %s probe (%s), want %s (%s); λ1 %v λmin %v failure %q",
				info.Step, s.Kind, s.Reason, sc.kind, sc.reason, s.Eigenvalues, s.LambdaMin, s.Failure)
		}
	}
	if st := m.Stats(); st.Triggered != 7 || st.Full != 8 {
		t.Errorf("stats %+v, want 8 full probes, 7 of them triggered", st)
	}
}

// TestNoTriggers: with NoTriggers the same jump brings nothing forward.
func TestNoTriggers(t *testing.T) {
	sink := &memSink{}
	m, _ := New("r", Config{Every: 1, FullEvery: 1000, TopK: 1, NoTrace: true, NoESD: true, NoTriggers: true}, WithSink(sink), WithLogger(discardLogger()))
	for i, l1 := range []float64{10, 20, 40, 80} {
		op := hvp.NewDense(spectrumMatrix([]float64{l1, 3, 2, 1, 0.5, 0.1}, 3))
		if err := m.Step(context.Background(), StepInfo{Step: int64(i + 1)}, func() (hvp.Operator, error) { return op, nil }); err != nil {
			t.Fatal(err)
		}
	}
	if st := m.Stats(); st.Full != 1 || st.Light != 3 || st.Triggered != 0 {
		t.Errorf("stats %+v, want 1 full and 3 light probes", st)
	}
}

// TestSchedulerBudget drives the budget's decisions with exact costs.
func TestSchedulerBudget(t *testing.T) {
	s := newScheduler(Config{Async: true, Budget: 0.1}.withDefaults())
	both := slots{light: true, full: true}
	for range 100 {
		if ex := s.observeStep(10*time.Millisecond, false); ex != 0 {
			t.Fatalf("a probe-free step has excess %v", ex)
		}
	}
	if ex := s.observeStep(15*time.Millisecond, true); ex != 5*time.Millisecond {
		t.Errorf("a 15 ms step beside a probe, base 10 ms: excess %v, want 5ms", ex)
	}
	s.train -= 15 * time.Millisecond // keep the arithmetic below round: 1 s of training
	want := func(p Plan, kind snapshot.Kind, reason snapshot.Reason, skip bool) {
		t.Helper()
		if p.Kind != kind || p.Reason != reason || p.Skip != skip {
			t.Errorf("plan %+v, want kind %q reason %q skip %v", p, kind, reason, skip)
		}
	}
	// Nothing measured yet: a light probe, to measure the cost per HVP.
	want(s.decide(both), snapshot.KindLight, snapshot.ReasonScheduled, false)
	s.charge(10*time.Millisecond, Plan{})
	s.measured(snapshot.KindLight, 10*time.Millisecond, 10)
	// 1 ms per HVP: a full probe is guessed at 60 HVPs (5 eigenpairs, 30
	// ESD steps, half the trace's 40): 70 ms ≤ 0.1 × 990 ms.
	if got := s.estimate(snapshot.KindFull); got != 60*time.Millisecond {
		t.Errorf("full probe estimate %v, want 60ms", got)
	}
	want(s.decide(both), snapshot.KindFull, snapshot.ReasonBudget, false)
	s.charge(200*time.Millisecond, Plan{})
	s.measured(snapshot.KindFull, 200*time.Millisecond, 50)
	// Per HVP now (0.8·10 ms + 200 ms)/(0.8·10 + 50): full 179 ms, light
	// 36 ms; 210 ms spent of 0.1 × 790 ms: nothing fits.
	perHVP := (0.8*0.01 + 0.2) / (0.8*10 + 50)
	if got, w := s.estimate(snapshot.KindLight).Seconds(), 10*perHVP; math.Abs(got-w) > 1e-9 {
		t.Errorf("light estimate %g s, want %g", got, w)
	}
	want(s.decide(both), "", "", true)
	if got := s.overhead(); math.Abs(got-0.21/0.79) > 1e-12 {
		t.Errorf("overhead %g, want %g", got, 0.21/0.79)
	}
	// 3 s more of training: 0.1 × 3.79 s pays for a light probe (0.246 s)
	// but not a full one (0.389 s); 1 s more pays for the full one.
	s.train += 3 * time.Second
	want(s.decide(both), snapshot.KindLight, snapshot.ReasonScheduled, false)
	s.train += time.Second
	want(s.decide(slots{light: true}), snapshot.KindLight, snapshot.ReasonScheduled, false) // the full slot is busy
	want(s.decide(both), snapshot.KindFull, snapshot.ReasonBudget, false)
	want(s.decide(slots{}), "", "", true)
	// A triggered probe's cost is reported, not held against the budget.
	s.charge(time.Second, Plan{Kind: snapshot.KindFull, Reason: snapshot.ReasonJump})
	if got, w := s.overhead(), 1.21/(5-1.21); math.Abs(got-w) > 1e-12 {
		t.Errorf("overhead %g, want %g", got, w)
	}
	// A trigger overrides the budget, but waits for a free full slot.
	s.charge(10*time.Second, Plan{})
	s.trig.next = snapshot.ReasonJump
	want(s.decide(slots{light: true}), "", "", true)
	want(s.decide(both), snapshot.KindFull, snapshot.ReasonJump, false)
	want(s.decide(both), "", "", true)
}

// TestBudgetMeasuresSlowdown drives an asynchronous monitor with the fake
// clock: the steps that run beside a probe take longer than the
// probe-free ones, and that excess is what the probe cost training.
func TestBudgetMeasuresSlowdown(t *testing.T) {
	dense := hvp.NewDense(spectrumMatrix(testSpectrum(30), 4))
	f := &fakeFactory{make: func() *gatedOp { return newGatedOp(dense, true) }}
	clock := &fakeClock{t: time.Unix(0, 0)}
	// NoTriggers: the spectrum has |λmin|/λ1 = 0.15, which would bring a
	// full probe forward.
	m, _ := New("r", Config{Every: 5, Async: true, TopK: 1, NoTrace: true, NoESD: true, NoTriggers: true}, WithLogger(discardLogger()))
	m.now = clock.now
	ctx := context.Background()
	step := func(i int64, d time.Duration) {
		clock.advance(d)
		if err := m.Step(ctx, StepInfo{Step: i}, f.at(i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := int64(1); i <= 5; i++ { // step 5 starts a light probe
		step(i, time.Millisecond)
	}
	for i := int64(6); i <= 9; i++ { // 3 ms beside it: 2 ms excess each
		step(i, 3*time.Millisecond)
	}
	close(f.ops[0].gate)
	for {
		m.mu.Lock()
		idle := m.inFlight == nil
		m.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(time.Millisecond)
	}
	step(10, time.Millisecond) // settles the light probe: 8 ms
	st := m.Stats()
	if st.OverheadSeconds != 0.008 || st.TrainSeconds != 0.017 || math.Abs(st.Overhead-0.008/0.009) > 1e-12 {
		t.Errorf("stats %+v, want 8 ms of overhead in 17 ms of training", st)
	}
	// 8 ms spent against 5% of 9 ms: step 10 gets no probe.
	if len(f.ops) != 1 || st.Skipped != 1 || st.Light != 1 || st.Due != 2 {
		t.Errorf("%d probes started, stats %+v; want the light probe of step 5 and step 10 skipped", len(f.ops), st)
	}
	for _, op := range f.ops[1:] {
		close(op.gate)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestFullEvery: a fixed schedule takes a full probe at every k-th due
// step, light ones between, in a synchronous run.
func TestFullEvery(t *testing.T) {
	sink := &memSink{}
	m, _ := New("r", Config{Every: 2, FullEvery: 3, TopK: 2, NoTrace: true, NoESD: true, NoTriggers: true}, WithSink(sink), WithLogger(discardLogger()))
	op := hvp.NewDense(spectrumMatrix(testSpectrum(30), 6))
	for i := int64(1); i <= 14; i++ {
		if err := m.Step(context.Background(), StepInfo{Step: i}, func() (hvp.Operator, error) { return op, nil }); err != nil {
			t.Fatal(err)
		}
	}
	var kinds []snapshot.Kind
	sort.Slice(sink.snaps, func(i, j int) bool { return sink.snaps[i].Step < sink.snaps[j].Step })
	for _, s := range sink.snaps {
		kinds = append(kinds, s.Kind)
	}
	F, L := snapshot.KindFull, snapshot.KindLight
	want := []snapshot.Kind{F, L, L, F, L, L, F}
	if len(kinds) != len(want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds %v, want %v", kinds, want)
		}
	}
}

// TestLightPreconditionedMatchesTruth: for Adam a light probe adds
// λ1(P⁻¹H), the top eigenvalue of P^{-1/2}·H·P^{-1/2}, within its residual
// of the dense truth.
func TestLightPreconditionedMatchesTruth(t *testing.T) {
	const n = 40
	h := spectrumMatrix(testSpectrum(n), 13)
	p := make([]float64, n)
	for i := range p {
		p[i] = 0.5 + float64(i%5)
	}
	sym := mat.NewSymDense(n, nil)
	for i := range n {
		for j := i; j < n; j++ {
			sym.SetSym(i, j, h.At(i, j)/math.Sqrt(p[i]*p[j]))
		}
	}
	var es mat.EigenSym
	if !es.Factorize(sym, false) {
		t.Fatal("EigenSym failed")
	}
	truth := es.Values(nil)[n-1]
	sink := &memSink{}
	m, _ := New("r", Config{Every: 1, LightOnly: true}, WithSink(sink), WithLogger(discardLogger()))
	info := StepInfo{Step: 1, LearningRate: 1e-3, Optimizer: snapshot.Adam, Beta1: 0.9, Preconditioner: p}
	if err := m.Step(context.Background(), info, func() (hvp.Operator, error) { return hvp.NewDense(h), nil }); err != nil {
		t.Fatal(err)
	}
	s := sink.snaps[0]
	pl := s.PreconditionedLambda1
	if s.Failed() || pl == nil {
		t.Fatalf("light Adam probe: failure %q, λ1(P⁻¹H) %v", s.Failure, pl)
	}
	if d := math.Abs(pl.Value - truth); d > pl.Residual+1e-12 {
		t.Errorf("λ1(P⁻¹H) %.10g, truth %.10g: off by %.3g > residual %.3g", pl.Value, truth, d, pl.Residual)
	}
	if want := pl.Value / SharpnessThreshold(snapshot.Adam, 1e-3, 0.9); math.Abs(s.SharpnessRatio-want) > 1e-12 {
		t.Errorf("sharpness ratio %g, want λ1(P⁻¹H)/threshold %g", s.SharpnessRatio, want)
	}
}
