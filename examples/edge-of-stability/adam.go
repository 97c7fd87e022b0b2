package main

import (
	"context"
	"errors"
	"fmt"
	"image/color"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// AdamBeta1 is β1 of the Adam runs (β2 = 0.999, ε = 1e-8: torch's
// defaults), so the adaptive threshold is (2+2β1)/(η(1−β1)) = 38/η.
const AdamBeta1 = 0.9

// AdamProbe is one measurement of an Adam run after step Step: the
// preconditioned sharpness λ1(P⁻¹H) with Adam's P_t of that step, and the
// raw λ1(H), each with its residual and HVP count.
type AdamProbe struct {
	Step                         int64
	Precond, PrecondResidual     float64
	Raw, RawResidual             float64
	PrecondHVPs, RawHVPs         int
	PrecondWarm, PrecondRefined  bool
	PrecondConverged, RawConverg bool
}

// AdamRun is one full-batch Adam run at one step size.
type AdamRun struct {
	LR        float64
	Threshold float64 // (2+2β1)/(η(1−β1))
	Probes    []AdamProbe
	// Losses[i] is the full-batch loss before step i+1.
	Losses   []float64
	Diverged bool
	// PrecondInit and PrecondMax are λ1(P⁻¹H) at the first probe and the
	// largest probed; FirstAbove is the first probe step with
	// λ1(P⁻¹H) > 38/η (0: never).
	PrecondInit, PrecondMax float64
	FirstAbove              int64
	// Over the probes in the second half of the run (LateProbes of them):
	// the share with |λ1(P⁻¹H)·η/38 − 1| ≤ Band, the median, smallest and
	// largest ratio λ1(P⁻¹H)/(38/η), and the same ratio for the raw λ1.
	LateProbes                            int
	LateInBand                            float64
	LateMedian, LateMin, LateMax          float64
	RawLateMedian, RawLateMin, RawLateMax float64
	RawInit, RawMax                       float64
	// RawLateFirst and RawLateLast are the raw λ1 at the first and the last
	// probe of the second half: it keeps moving while λ1(P⁻¹H) hovers.
	RawLateFirst, RawLateLast               float64
	FinalLoss, TrainAcc                     float64
	PrecondHVPsPerProbe, RawHVPsPerProbe    float64
	PrecondWarmProbes, PrecondRefinedProbes int
}

// studyAdam runs full-batch Adam at each of cfg.AdamLRs.
func studyAdam(ctx context.Context, cfg Config, ds *data.Dataset, st *store.Store, log *slog.Logger) ([]AdamRun, error) {
	var runs []AdamRun
	for _, lr := range cfg.AdamLRs {
		r, err := runAdam(ctx, cfg, lr, ds, st, log)
		if err != nil {
			return runs, fmt.Errorf("Adam η = %g: %w", lr, err)
		}
		runs = append(runs, r)
	}
	return runs, nil
}

// eigenOpts is the λ1 solve of every Adam probe: residual ≤ 1e-5·λ1,
// warm-started from the previous probe's eigenvector.
func eigenOpts(seed uint64) estimators.EigenOptions {
	return estimators.EigenOptions{K: 1, Tol: 1e-5, MaxHVPs: 400, WarmMaxHVPs: 60, Seed: seed}
}

func adamRunID(lr float64) string { return "eos-adam-lr" + strconv.FormatFloat(lr, 'g', -1, 64) }

func runAdam(ctx context.Context, cfg Config, lr float64, ds *data.Dataset, st *store.Store, log *slog.Logger) (AdamRun, error) {
	sizes := append(append([]int{ds.Shape.Size()}, cfg.Hidden...), ds.Classes)
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: sizes, Activation: trainer.Tanh}, cfg.Seed)
	if err != nil {
		return AdamRun{}, err
	}
	r := AdamRun{LR: lr, Threshold: monitor.SharpnessThreshold(snapshot.Adam, lr, AdamBeta1)}
	id := adamRunID(lr)
	if err := st.PutRun(snapshot.Run{ID: id, Model: net.String(), Optimizer: snapshot.Adam, Started: time.Now().UTC(),
		Config: map[string]string{"lr": strconv.FormatFloat(lr, 'g', -1, 64), "beta1": strconv.FormatFloat(AdamBeta1, 'g', -1, 64),
			"batch": "full", "images": strconv.Itoa(ds.Len()), "loss": OneHotMSE{}.Name(), "seed": strconv.FormatUint(cfg.Seed, 10)}}); err != nil {
		return r, err
	}
	full := trainer.HeadBatch(ds, 0)
	opt := &trainer.Adam{LR: lr, B1: AdamBeta1}
	p := make([]float64, net.Dim())
	var warmP, warmRaw *estimators.EigenWarm
	every := cfg.AdamEvery
	if every <= 0 {
		every = cfg.Every
	}
	probe := func(ctx context.Context, info trainer.StepInfo) error {
		r.Losses = append(r.Losses, info.Loss)
		if info.Step%every != 0 {
			return nil
		}
		h, err := hessian.NewExact(info.Model, full, OneHotMSE{}, trainer.ModeEval)
		if err != nil {
			return err
		}
		if !opt.Preconditioner(p) {
			return errors.New("Adam has no preconditioner after a step")
		}
		pre, err := hvp.NewInversePreconditioned(h, p)
		if err != nil {
			return err
		}
		seed := cfg.Seed + uint64(info.Step)
		rp, wp, err := estimators.TopEigen(ctx, pre, eigenOpts(seed), warmP)
		if (err != nil && !errors.Is(err, estimators.ErrNotConverged)) || len(rp.Values) == 0 {
			return fmt.Errorf("step %d: λ1(P⁻¹H): %w", info.Step, err)
		}
		warmP = wp
		pr := AdamProbe{Step: info.Step, Precond: rp.Values[0], PrecondResidual: rp.Residuals[0], PrecondHVPs: rp.HVPs,
			PrecondWarm: rp.Warm, PrecondRefined: rp.Refined, PrecondConverged: err == nil}
		rr, wr, err := estimators.TopEigen(ctx, h, eigenOpts(seed+1), warmRaw)
		if (err != nil && !errors.Is(err, estimators.ErrNotConverged)) || len(rr.Values) == 0 {
			return fmt.Errorf("step %d: λ1(H): %w", info.Step, err)
		}
		warmRaw = wr
		pr.Raw, pr.RawResidual, pr.RawHVPs, pr.RawConverg = rr.Values[0], rr.Residuals[0], rr.HVPs, err == nil
		r.Probes = append(r.Probes, pr)
		// The store gets the snapshot a monitor would write for an Adam
		// run: raw λ1 as the eigenvalue, λ1(P⁻¹H) as the sharpness.
		if err := st.PutSnapshot(snapshot.Snapshot{Run: id, Step: info.Step, Time: time.Now().UTC(), Loss: h.Loss(), LearningRate: lr,
			Optimizer: snapshot.Adam, Beta1: AdamBeta1, SharpnessThreshold: r.Threshold, SharpnessRatio: pr.Precond / r.Threshold,
			Eigenvalues: []float64{pr.Raw}, Residuals: []float64{pr.RawResidual},
			PreconditionedLambda1: &snapshot.Eigenpair{Value: pr.Precond, Residual: pr.PrecondResidual},
			HVPs:                  pr.PrecondHVPs + pr.RawHVPs, Warm: pr.PrecondWarm}); err != nil {
			return err
		}
		log.Info("adam probe", "lr", lr, "step", info.Step, "precond", pr.Precond, "ratio", pr.Precond/r.Threshold,
			"raw", pr.Raw, "hvps", pr.PrecondHVPs+pr.RawHVPs, "loss", info.Loss)
		return nil
	}
	_, err = trainer.Train(ctx, trainer.Config{
		Model: net, Loss: OneHotMSE{}, Optimizer: opt, Data: ds, BatchSize: 0, Steps: cfg.AdamSteps, Seed: cfg.Seed,
		Hooks: []trainer.Hook{probe},
	})
	switch {
	case errors.Is(err, trainer.ErrDiverged):
		r.Diverged = true
		log.Warn("Adam diverged", "lr", lr, "err", err)
	case err != nil:
		return r, err
	}
	r.summarise()
	if r.TrainAcc, err = trainer.Accuracy(net, ds); err != nil {
		return r, err
	}
	log.Info("Adam run done", "lr", lr, "threshold", r.Threshold, "late_in_band", r.LateInBand, "late_median", r.LateMedian)
	return r, nil
}

// medianMinMax of a non-empty slice.
func medianMinMax(xs []float64) (med, lo, hi float64) {
	s := slices.Clone(xs)
	slices.Sort(s)
	med = s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return med, s[0], s[len(s)-1]
}

func (r *AdamRun) summarise() {
	if len(r.Losses) > 0 {
		r.FinalLoss = r.Losses[len(r.Losses)-1]
	}
	var late, rawLate []float64
	in := 0
	var hp, hr float64
	for i, pr := range r.Probes {
		if i == 0 {
			r.PrecondInit, r.RawInit = pr.Precond, pr.Raw
		}
		r.PrecondMax, r.RawMax = max(r.PrecondMax, pr.Precond), max(r.RawMax, pr.Raw)
		q := pr.Precond / r.Threshold
		if r.FirstAbove == 0 && q > 1 {
			r.FirstAbove = pr.Step
		}
		hp += float64(pr.PrecondHVPs)
		hr += float64(pr.RawHVPs)
		if pr.PrecondWarm {
			r.PrecondWarmProbes++
		}
		if pr.PrecondRefined {
			r.PrecondRefinedProbes++
		}
		if 2*pr.Step > int64(len(r.Losses)) {
			if len(late) == 0 {
				r.RawLateFirst = pr.Raw
			}
			r.RawLateLast = pr.Raw
			late = append(late, q)
			rawLate = append(rawLate, pr.Raw/r.Threshold)
			if math.Abs(q-1) <= Band {
				in++
			}
		}
	}
	if n := len(r.Probes); n > 0 {
		r.PrecondHVPsPerProbe, r.RawHVPsPerProbe = hp/float64(n), hr/float64(n)
	}
	r.LateProbes = len(late)
	if len(late) == 0 {
		return
	}
	r.LateInBand = float64(in) / float64(len(late))
	r.LateMedian, r.LateMin, r.LateMax = medianMinMax(late)
	r.RawLateMedian, r.RawLateMin, r.RawLateMax = medianMinMax(rawLate)
}

// AtEdge reports whether λ1(P⁻¹H) stayed within ±Band of 38/η at every
// probe of the second half of the run.
func (r AdamRun) AtEdge() bool { return !r.Diverged && r.LateProbes > 0 && r.LateInBand == 1 }

// AdamTable is the markdown table of the Adam runs, one row per step size.
func (r Result) AdamTable() string {
	var b strings.Builder
	b.WriteString("| η | 38/η | λ1(P⁻¹H) first probe | max λ1(P⁻¹H) | first step λ1(P⁻¹H) > 38/η | probes in 2nd half | within ±20%, 2nd half | λ1(P⁻¹H)/(38/η) 2nd half median [min, max] | raw λ1 first → max | raw λ1 2nd half first → last | raw λ1/(38/η) 2nd half median [min, max] | HVPs/probe P⁻¹H, raw | final loss | train acc |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|---:|\n")
	for _, run := range r.AdamRuns {
		fmt.Fprintf(&b, "| %g | %.4g | %.4g | %.4g | %s | %d | ", run.LR, run.Threshold, run.PrecondInit, run.PrecondMax,
			stepOrNever(run.FirstAbove), run.LateProbes)
		if run.LateProbes == 0 {
			b.WriteString("— | — | ")
		} else {
			fmt.Fprintf(&b, "%.0f%% | %.3f [%.3f, %.3f] | ", 100*run.LateInBand, run.LateMedian, run.LateMin, run.LateMax)
		}
		fmt.Fprintf(&b, "%.4g → %.4g | ", run.RawInit, run.RawMax)
		if run.LateProbes == 0 {
			b.WriteString("— | — | ")
		} else {
			fmt.Fprintf(&b, "%.4g → %.4g (%+.0f%%) | %.2e [%.2e, %.2e] | ", run.RawLateFirst, run.RawLateLast, 100*(run.RawLateLast/run.RawLateFirst-1),
				run.RawLateMedian, run.RawLateMin, run.RawLateMax)
		}
		fmt.Fprintf(&b, "%.1f, %.1f | ", run.PrecondHVPsPerProbe, run.RawHVPsPerProbe)
		if run.Diverged {
			b.WriteString("diverged | — |\n")
			continue
		}
		fmt.Fprintf(&b, "%.5f | %.2f%% |\n", run.FinalLoss, 100*run.TrainAcc)
	}
	return b.String()
}

// AdamVerdict says in one sentence per Adam run whether the adaptive edge
// of stability showed.
func (r Result) AdamVerdict() string {
	var b strings.Builder
	for _, run := range r.AdamRuns {
		fmt.Fprintf(&b, "- Adam η = %g (38/η = %.4g): ", run.LR, run.Threshold)
		switch {
		case run.Diverged:
			b.WriteString("Adam diverged.\n")
		case run.LateProbes == 0:
			b.WriteString("no probes in the second half of the run.\n")
		default:
			verdict := "stayed"
			if !run.AtEdge() {
				verdict = "did not stay"
			}
			above := "never exceeded 38/η"
			if run.FirstAbove > 0 {
				above = fmt.Sprintf("exceeded 38/η first at step %d", run.FirstAbove)
			}
			fmt.Fprintf(&b, "λ1(P⁻¹H) went from %.4g at the first probe to at most %.4g, %s, and %s within ±20%% of 38/η in the second half "+
				"(%.0f%% of %d probes, ratio %.3f [%.3f, %.3f]); the raw λ1 went from %.4g to at most %.4g, %.2g–%.2g of 38/η in the second half, "+
				"where it moved from %.4g to %.4g.\n",
				run.PrecondInit, run.PrecondMax, above, verdict, 100*run.LateInBand, run.LateProbes, run.LateMedian, run.LateMin, run.LateMax,
				run.RawInit, run.RawMax, run.RawLateMin, run.RawLateMax, run.RawLateFirst, run.RawLateLast)
		}
	}
	return b.String()
}

// AdamSetting describes the Adam runs in one markdown paragraph.
func (c Config) AdamSetting() string {
	every := c.AdamEvery
	if every <= 0 {
		every = c.Every
	}
	return fmt.Sprintf("Adam runs of setting %q: full-batch Adam (β1 = %g, β2 = 0.999, ε = 1e-8, torch's bias corrections) on the same "+
		"%d MNIST images, model and squared loss, η ∈ %v, %d steps. Every %d steps λ1(P⁻¹H) is computed as the top eigenvalue of "+
		"P^{-1/2}·H·P^{-1/2} (hvp.NewInversePreconditioned with trainer.Adam.Preconditioner, P_t = (1−β1^t)·(√(v_t/(1−β2^t))+ε)) "+
		"and the raw λ1(H) on the full batch, each by estimators.TopEigen warm-started from its previous probe (residual ≤ 1e-5·λ1).",
		c.Name, AdamBeta1, c.Images, c.AdamLRs, c.AdamSteps, every)
}

// adamPlot draws λ1(P⁻¹H) (solid), raw λ1 (dashed) and 38/η (dotted) of
// every Adam run on a log axis.
func (r Result) adamPlot(path string) error {
	p := gplot.New()
	p.Title.Text = "Full-batch Adam on MNIST: preconditioned sharpness λ1(P⁻¹H) (solid) and raw λ1(H) (dashed) against 38/η (dotted)"
	p.Title.TextStyle.Font.Size = vg.Points(10)
	p.X.Label.Text = "step"
	p.Y.Label.Text = "eigenvalue"
	p.Y.Scale = gplot.LogScale{}
	p.Y.Tick.Marker = gplot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	// In the empty decades between the raw and the preconditioned curves.
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.YOffs = vg.Points(110)
	for i, run := range r.AdamRuns {
		label := "η=" + strconv.FormatFloat(run.LR, 'g', -1, 64)
		var pre, raw plotter.XYs
		for _, pr := range run.Probes {
			if pr.Precond > 0 {
				pre = append(pre, plotter.XY{X: float64(pr.Step), Y: pr.Precond})
			}
			if pr.Raw > 0 {
				raw = append(raw, plotter.XY{X: float64(pr.Step), Y: pr.Raw})
			}
		}
		if len(pre) == 0 {
			continue
		}
		c := plotutil.Color(i)
		lp, err := plotter.NewLine(pre)
		if err != nil {
			return err
		}
		lp.Color, lp.Width = c, vg.Points(1.4)
		p.Add(lp)
		p.Legend.Add(label+" λ1(P⁻¹H)", lp)
		if len(raw) > 0 {
			lr, err := plotter.NewLine(raw)
			if err != nil {
				return err
			}
			lr.Color, lr.Width, lr.Dashes = c, vg.Points(1), []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(lr)
			p.Legend.Add(label+" raw λ1(H)", lr)
		}
		x1 := float64(len(run.Losses))
		th, err := plotter.NewLine(plotter.XYs{{X: 0, Y: run.Threshold}, {X: x1, Y: run.Threshold}})
		if err != nil {
			return err
		}
		th.Color, th.Width, th.Dashes = c, vg.Points(1), []vg.Length{vg.Points(1), vg.Points(2)}
		p.Add(th)
		p.Legend.Add(label+" 38/η", th)
		// The ±20% band around 38/η.
		band, err := plotter.NewPolygon(plotter.XYs{{X: 0, Y: (1 - Band) * run.Threshold}, {X: x1, Y: (1 - Band) * run.Threshold},
			{X: x1, Y: (1 + Band) * run.Threshold}, {X: 0, Y: (1 + Band) * run.Threshold}})
		if err != nil {
			return err
		}
		fc := plotutil.Color(i)
		rr, gg, bb, _ := fc.RGBA()
		band.Color = colorAlpha(rr, gg, bb, 40)
		band.LineStyle = draw.LineStyle{Width: 0}
		p.Add(band)
	}
	return p.Save(10*vg.Inch, 6*vg.Inch, path)
}

// colorAlpha is the colour with 16-bit components r, g, b at opacity a/255.
func colorAlpha(r, g, b uint32, a uint8) color.NRGBA {
	return color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: a}
}
