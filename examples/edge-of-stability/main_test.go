package main

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// tiny is the study at test size: seconds, not minutes, even under -race.
func tiny() Config {
	return Config{Name: "tiny", Images: 200, Hidden: []int{32, 32}, LRs: []float64{0.5, 0.7}, Steps: 120, Every: 5, ESDSteps: 10, Seed: 1}
}

func runTiny(t *testing.T, cfg Config, dir string) Result {
	t.Helper()
	train, _, err := data.LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "eos.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	res, err := Study(context.Background(), cfg, train, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestStudy(t *testing.T) {
	dir := t.TempDir()
	cfg := tiny()
	res := runTiny(t, cfg, dir)
	if len(res.Runs) != len(cfg.LRs) {
		t.Fatalf("%d runs, want %d", len(res.Runs), len(cfg.LRs))
	}
	for _, run := range res.Runs {
		if run.Diverged {
			t.Fatalf("η = %g diverged", run.LR)
		}
		if want := 2 / run.LR; math.Abs(run.Threshold-want) > 1e-12*want {
			t.Errorf("η = %g: threshold %g, want 2/η = %g", run.LR, run.Threshold, want)
		}
		if len(run.Losses) != int(cfg.Steps) {
			t.Errorf("η = %g: %d losses, want %d", run.LR, len(run.Losses), cfg.Steps)
		}
		if want := int(cfg.Steps / cfg.Every); len(run.Snapshots) != want {
			t.Fatalf("η = %g: %d probes, want %d", run.LR, len(run.Snapshots), want)
		}
		var l1s []float64
		for _, sn := range run.Snapshots {
			l1, ok := sn.Lambda1()
			if sn.Failed() || !ok {
				t.Fatalf("η = %g step %d: failed probe %q", run.LR, sn.Step, sn.Failure)
			}
			// The monitor records the GD threshold 2/η with every probe.
			if math.Abs(sn.SharpnessThreshold-run.Threshold) > 1e-12*run.Threshold {
				t.Errorf("η = %g: snapshot threshold %g, want %g", run.LR, sn.SharpnessThreshold, run.Threshold)
			}
			if !(l1 > 0) || sn.Residuals[0] > 1e-3*l1 {
				t.Errorf("η = %g step %d: λ1 = %g with residual %g", run.LR, sn.Step, l1, sn.Residuals[0])
			}
			l1s = append(l1s, l1)
		}
		// Progressive sharpening: λ1 rises over the first probes.
		if k := len(l1s) / 4; !(l1s[k] > l1s[0]) {
			t.Errorf("η = %g: λ1 did not rise early: %v", run.LR, l1s[:k+1])
		}
		if run.FinalLoss >= run.Losses[0] {
			t.Errorf("η = %g: loss went from %g to %g", run.LR, run.Losses[0], run.FinalLoss)
		}
		if run.ESD == nil || len(run.ESD.Nodes) != cfg.ESDSteps {
			t.Errorf("η = %g: final ESD %+v", run.LR, run.ESD)
		}
	}
	// The larger step size reaches the edge of stability within the tiny
	// budget: λ1 crosses 2/η, the alert condition holds, and the loss
	// stops falling monotonically.
	big := res.Runs[len(res.Runs)-1]
	if big.FirstAbove == 0 {
		t.Errorf("η = %g: λ1 never exceeded 2/η = %g (max %g)", big.LR, big.Threshold, big.Lambda1Max)
	}
	if big.LossUps == 0 {
		t.Errorf("η = %g: the loss never rose after λ1 crossed 2/η", big.LR)
	}

	table := res.Table()
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2+len(cfg.LRs) {
		t.Fatalf("table has %d lines, want %d:\n%s", len(lines), 2+len(cfg.LRs), table)
	}
	cells := strings.Count(lines[0], "|")
	for _, l := range lines[1:] {
		if strings.Count(l, "|") != cells {
			t.Errorf("table line %q has %d cells, header %d", l, strings.Count(l, "|")-1, cells-1)
		}
	}
	files, err := res.Write(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Errorf("wrote %v, want table, sharpness, loss and ESD", files)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("%s: missing or empty (%v)", f, err)
		}
	}
}

func TestDeterministic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the tiny study twice")
	}
	cfg := tiny()
	cfg.LRs, cfg.Steps = []float64{0.7}, 60
	a, b := runTiny(t, cfg, t.TempDir()), runTiny(t, cfg, t.TempDir())
	if a.Table() != b.Table() || a.Verdict() != b.Verdict() {
		t.Errorf("two runs with the same seeds differ:\n%s\n%s", a.Table(), b.Table())
	}
}

// TestSummarise checks the edge-of-stability bookkeeping on a made-up
// trajectory with 2/η = 10.
func TestSummarise(t *testing.T) {
	l1 := []float64{4, 6, 8.5, 9.5, 10.5, 11, 9.8, 10.2, 12.5, 10.1, 9.9, 10.4, 10, 9.6, 10.3}
	r := Run{LR: 0.2, Threshold: 10}
	for i, l := range l1 {
		r.Snapshots = append(r.Snapshots, snapshot.Snapshot{Step: int64(10 * (i + 1)), Eigenvalues: []float64{l}, Residuals: []float64{0}})
	}
	r.Snapshots = append(r.Snapshots, snapshot.Snapshot{Step: 200, Failure: "nan"}) // ignored
	for i := range 160 {
		l := 1 / float64(i+1)
		if i == 60 || i == 61 || i == 100 {
			l *= 1.5
		}
		r.Losses = append(r.Losses, l)
	}
	r.summarise()
	check := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
	check("Lambda1Init", r.Lambda1Init, 4)
	check("Lambda1Max", r.Lambda1Max, 12.5)
	check("FirstNear", float64(r.FirstNear), 30)   // 8.5 ≥ 8
	check("FirstAbove", float64(r.FirstAbove), 50) // 10.5 > 10
	check("ProbesAfter", float64(r.ProbesAfter), 11)
	check("InBand", r.InBand, 10.0/11) // all but 12.5
	check("Above", r.Above, 7.0/11)    // 10.5 11 10.2 12.5 10.1 10.4 10.3
	check("MinRatio", r.MinRatio, 0.96)
	check("MaxRatio", r.MaxRatio, 1.25)
	check("MedianRatio", r.MedianRatio, 1.02)
	// Steps 90..150 are in the second half of 160 losses: 12.5 (step 90)
	// is out of the band, the other 6 are in.
	check("LateProbes", float64(r.LateProbes), 7)
	check("LateInBand", r.LateInBand, 6.0/7)
	check("LossUps", float64(r.LossUps), 2) // the jumps at steps 60 and 100 (61 is down from 60)
	if !r.Stays() {
		t.Error("Stays() = false, want true (10 of 11 probes within ±20%)")
	}
	r.ProbesAfter = MinProbesAfter - 1
	if r.Stays() {
		t.Error("Stays() with too few probes after the crossing")
	}
}

// tinyAdam is the Adam study at test size.
func tinyAdam() Config {
	return Config{Name: "tiny", Images: 500, Hidden: []int{32, 32}, Every: 10, Seed: 1, AdamLRs: []float64{4e-3}, AdamSteps: 200}
}

// TestAdamStudy: full-batch Adam reaches the adaptive edge of stability at
// test size: λ1(P⁻¹H) rises to 38/η and stays within ±20% of it in the
// second half, while the raw λ1 stays orders of magnitude below that line.
func TestAdamStudy(t *testing.T) {
	dir := t.TempDir()
	cfg := tinyAdam()
	res := runTiny(t, cfg, dir)
	if len(res.Runs) != 0 || len(res.AdamRuns) != 1 {
		t.Fatalf("%d GD and %d Adam runs, want 0 and 1", len(res.Runs), len(res.AdamRuns))
	}
	run := res.AdamRuns[0]
	if run.Diverged {
		t.Fatal("Adam diverged")
	}
	if want := 38 / run.LR; math.Abs(run.Threshold-want) > 1e-9*want {
		t.Errorf("threshold %g, want 38/η = %g", run.Threshold, want)
	}
	if len(run.Losses) != int(cfg.AdamSteps) || len(run.Probes) != int(cfg.AdamSteps/cfg.Every) {
		t.Fatalf("%d losses and %d probes, want %d and %d", len(run.Losses), len(run.Probes), cfg.AdamSteps, cfg.AdamSteps/cfg.Every)
	}
	for _, p := range run.Probes {
		if !(p.Precond > 0) || p.PrecondResidual > 1e-3*p.Precond || !(p.Raw > 0) || p.RawResidual > 1e-3*p.Raw {
			t.Errorf("step %d: λ1(P⁻¹H) %g ± %g, λ1 %g ± %g", p.Step, p.Precond, p.PrecondResidual, p.Raw, p.RawResidual)
		}
	}
	t.Logf("\n%s\n%s", res.AdamTable(), res.AdamVerdict())
	// At this size the hover is looser than in the study (where every late
	// probe is within ±20%): most late probes and the median are.
	if run.FirstAbove == 0 || run.LateProbes < 8 || run.LateInBand < 0.7 || math.Abs(run.LateMedian-1) > Band {
		t.Errorf("λ1(P⁻¹H) did not settle at 38/η: first above %d, %d late probes, %.0f%% within ±20%%, ratio [%g, %g]",
			run.FirstAbove, run.LateProbes, 100*run.LateInBand, run.LateMin, run.LateMax)
	}
	if run.RawLateMax > 0.01 {
		t.Errorf("raw λ1 reached %g of 38/η: the two should be orders apart", run.RawLateMax)
	}
	if run.FinalLoss >= run.Losses[0] {
		t.Errorf("loss went from %g to %g", run.Losses[0], run.FinalLoss)
	}
	st, err := store.Open(filepath.Join(dir, "eos.db"), store.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sns, err := st.Snapshots(adamRunID(run.LR), 0, -1)
	st.Close()
	if err != nil || len(sns) != len(run.Probes) {
		t.Fatalf("%d stored snapshots (%v), want %d", len(sns), err, len(run.Probes))
	}
	if l, ok := sns[len(sns)-1].Lambda1(); !ok || l != run.Probes[len(run.Probes)-1].Raw || sns[0].PreconditionedLambda1.Value != run.Probes[0].Precond {
		t.Errorf("stored snapshots do not hold the probes: %+v", sns[0])
	}
	lines := strings.Split(strings.TrimSpace(res.AdamTable()), "\n")
	if len(lines) != 3 || strings.Count(lines[0], "|") != strings.Count(lines[2], "|") {
		t.Errorf("bad table:\n%s", res.AdamTable())
	}
	files, err := res.Write(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Errorf("wrote %v, want the Adam table, sharpness and loss plots", files)
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("%s: missing or empty (%v)", f, err)
		}
	}
}

// TestAdamSummarise checks the Adam bookkeeping on a made-up trajectory
// with 38/η = 100 over 100 steps.
func TestAdamSummarise(t *testing.T) {
	pre := []float64{20, 60, 110, 90, 85, 130, 95, 105, 100, 81}
	r := AdamRun{LR: 0.38, Threshold: 100, Losses: make([]float64, 100)}
	for i, p := range pre {
		r.Probes = append(r.Probes, AdamProbe{Step: int64(10 * (i + 1)), Precond: p, Raw: float64(i + 1), PrecondHVPs: 10, RawHVPs: 2 * i})
	}
	r.summarise()
	check := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
	check("PrecondInit", r.PrecondInit, 20)
	check("PrecondMax", r.PrecondMax, 130)
	check("FirstAbove", float64(r.FirstAbove), 30)
	// Steps 60..100 are in the second half: 130 95 105 100 81.
	check("LateProbes", float64(r.LateProbes), 5)
	check("LateInBand", r.LateInBand, 4.0/5)
	check("LateMedian", r.LateMedian, 1.00)
	check("LateMin", r.LateMin, 0.81)
	check("LateMax", r.LateMax, 1.30)
	check("RawLateMin", r.RawLateMin, 0.06)
	check("RawLateMax", r.RawLateMax, 0.10)
	check("RawHVPsPerProbe", r.RawHVPsPerProbe, 9)
	check("RawLateFirst", r.RawLateFirst, 6)
	check("RawLateLast", r.RawLateLast, 10)
	if r.AtEdge() {
		t.Error("AtEdge with a late probe at 1.3×")
	}
	r.Probes[5].Precond = 119
	r.summarise()
	if !r.AtEdge() {
		t.Errorf("not AtEdge with every late probe within ±20%%: %+v", r)
	}
}

// TestMonitorAgreesOnAdam runs full-batch Adam with both the monitor
// (hessian.Hook, which hands Adam's P to the monitor) and a hook that
// computes λ1(P⁻¹H) directly as the Adam study does, at the same steps on
// the same parameters: the monitor's preconditioned λ1 and its sharpness
// ratio against 38/η must agree with the direct values to within the two
// residuals.
func TestMonitorAgreesOnAdam(t *testing.T) {
	train, _, err := data.LoadMNIST("")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := train.Subset(0, 200)
	if err != nil {
		t.Fatal(err)
	}
	ds = ds.Flat()
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: []int{784, 16, 10}, Activation: trainer.Tanh}, 1)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(t.TempDir(), "m.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const lr, every = 2e-3, 10
	mon, err := monitor.New("adam", monitor.Config{Every: every, TopK: 1, EigenTol: 1e-9, NoTrace: true, NoESD: true, MaxHVPs: 2000, Seed: 1},
		monitor.WithSink(st))
	if err != nil {
		t.Fatal(err)
	}
	full := trainer.HeadBatch(ds, 0)
	opt := &trainer.Adam{LR: lr, B1: AdamBeta1}
	direct := map[int64]estimators.EigenResult{}
	p := make([]float64, net.Dim())
	own := func(ctx context.Context, info trainer.StepInfo) error {
		if info.Step%every != 0 {
			return nil
		}
		h, err := hessian.NewExact(info.Model, full, OneHotMSE{}, trainer.ModeEval)
		if err != nil {
			return err
		}
		if !opt.Preconditioner(p) {
			t.Fatal("no preconditioner")
		}
		pre, err := hvp.NewInversePreconditioned(h, p)
		if err != nil {
			return err
		}
		res, _, err := estimators.TopEigen(ctx, pre, estimators.EigenOptions{K: 1, Tol: 1e-9, MaxHVPs: 2000, Seed: 9}, nil)
		if err != nil {
			return err
		}
		direct[info.Step] = res
		return nil
	}
	if _, err := trainer.Train(context.Background(), trainer.Config{Model: net, Loss: OneHotMSE{}, Optimizer: opt, Data: ds, Steps: 60, Seed: 1,
		Hooks: []trainer.Hook{own, hessian.Hook(mon, hessian.HookOptions{Batch: full, Mode: trainer.ModeEval})}}); err != nil {
		t.Fatal(err)
	}
	if err := mon.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	sns, err := st.Snapshots("adam", 0, -1)
	if err != nil || len(sns) != 6 {
		t.Fatalf("%d snapshots (%v), want 6", len(sns), err)
	}
	threshold := 38 / lr
	for _, sn := range sns {
		d, ok := direct[sn.Step]
		if !ok || sn.PreconditionedLambda1 == nil {
			t.Fatalf("step %d: direct %v, monitor %+v", sn.Step, ok, sn.PreconditionedLambda1)
		}
		m := sn.PreconditionedLambda1
		if diff := math.Abs(m.Value - d.Values[0]); diff > m.Residual+d.Residuals[0]+1e-9*d.Values[0] {
			t.Errorf("step %d: monitor λ1(P⁻¹H) %.12g ± %.1e, direct %.12g ± %.1e", sn.Step, m.Value, m.Residual, d.Values[0], d.Residuals[0])
		}
		if math.Abs(sn.SharpnessThreshold-threshold) > 1e-9*threshold || math.Abs(sn.SharpnessRatio-m.Value/threshold) > 1e-12 {
			t.Errorf("step %d: threshold %g ratio %g, want 38/η = %g and λ1(P⁻¹H)/(38/η) = %g", sn.Step, sn.SharpnessThreshold, sn.SharpnessRatio, threshold, m.Value/threshold)
		}
		t.Logf("step %d: monitor λ1(P⁻¹H) %.12g ± %.1e, direct %.12g ± %.1e, ratio %.4f", sn.Step, m.Value, m.Residual, d.Values[0], d.Residuals[0], sn.SharpnessRatio)
		if l1, _ := sn.Lambda1(); !(m.Value > 100*l1) {
			t.Errorf("step %d: λ1(P⁻¹H) %g not far above raw λ1 %g", sn.Step, m.Value, l1)
		}
	}
}
