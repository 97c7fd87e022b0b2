// Command edge-of-stability shows the edge of stability (Cohen et al.
// 2021) with hessmon's monitor: full-batch gradient descent with step size
// η on a fixed MNIST subset, an MLP and the squared loss. The sharpness λ1
// (the top Hessian eigenvalue of the very objective GD minimises) first
// rises ("progressive sharpening") until it reaches 2/η, the stability
// limit of GD on a quadratic, and then hovers around 2/η while the loss
// keeps falling, non-monotonically.
//
// The monitor probes λ1 every few steps on the full batch, warm-started
// from the previous probe; the program reports, for each η, the first probe
// at which λ1 > 2/η (when the HessianEdgeOfStability alert of
// dashboards/rules.yml would fire, modulo its `for: 2m`) and whether λ1
// then stays within ±20% of 2/η. It writes a markdown table and two plots
// (λ1 against 2/η, and the loss) into docs/findings/.
//
// The same data and model then train with full-batch Adam, for the
// adaptive edge of stability (Cohen et al. 2022): the preconditioned
// sharpness λ1(P⁻¹H), with Adam's diagonal preconditioner P_t
// (trainer.Adam.Preconditioner), rises to (2+2β1)/(η(1−β1)) = 38/η and
// hovers there, while the raw λ1(H) stays orders of magnitude below it.
// λ1(P⁻¹H) is the top eigenvalue of the symmetric P^{-1/2}·H·P^{-1/2}
// (hvp.NewInversePreconditioned), warm-started probe to probe. The Adam
// runs write their own table and plots (…-adam.md, …-adam-sharpness.png,
// …-adam-loss.png):
//
//	go run ./examples/edge-of-stability --quick   # a few minutes on 2 cores
//	go run ./examples/edge-of-stability           # the full setting
//	go run ./examples/edge-of-stability --quick --no-sgd   # only the Adam runs
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	gplot "gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/plot"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// Band is the relative distance from 2/η within which λ1 counts as being
// at the edge of stability.
const Band = 0.2

// Config is one setting of the study.
type Config struct {
	Name   string    // "quick" or "full": names the output files
	Images int       // the fixed subset: the first Images MNIST training images
	Hidden []int     // hidden layer sizes of the tanh MLP
	LRs    []float64 // the step sizes η, one GD run each
	Steps  int64     // GD steps per run
	Every  int64     // probe λ1 every Every steps
	// ESDSteps Lanczos steps for a spectral density of the final Hessian
	// (0: none).
	ESDSteps int
	Seed     uint64
	// AdamLRs are the step sizes of the full-batch Adam runs on the same
	// data and model (none: no Adam runs), AdamSteps their length and
	// AdamEvery their probe interval (0: Every).
	AdamLRs   []float64
	AdamSteps int64
	AdamEvery int64
}

// Quick is the setting of --quick.
func Quick() Config {
	return Config{Name: "quick", Images: 1000, Hidden: []int{64, 64}, LRs: []float64{0.6, 0.8},
		Steps: 400, Every: 10, ESDSteps: 30, Seed: 1, AdamLRs: []float64{1e-3, 2e-3}, AdamSteps: 400, AdamEvery: 10}
}

// Full is the default setting.
func Full() Config {
	return Config{Name: "full", Images: 2000, Hidden: []int{64, 64}, LRs: []float64{0.4, 0.6, 0.8},
		Steps: 1000, Every: 10, ESDSteps: 60, Seed: 1, AdamLRs: []float64{5e-4, 1e-3, 2e-3}, AdamSteps: 1000, AdamEvery: 10}
}

// OneHotMSE is trainer.MSE (PyTorch's nn.MSELoss: the mean over samples
// and classes) against one-hot targets built from the labels, so that a
// classification data set trains with the squared loss, as Cohen et al.
// do. A batch that carries Targets uses them as they are.
type OneHotMSE struct{}

// Name returns "mse-onehot".
func (OneHotMSE) Name() string { return "mse-onehot" }

// Eval computes the mean squared error to the one-hot labels.
func (OneHotMSE) Eval(grad []float64, z *trainer.Tensor, b trainer.Batch) (float64, error) {
	if b.Targets == nil {
		if len(b.Labels) != z.N {
			return 0, fmt.Errorf("mse-onehot: %d labels for %d samples", len(b.Labels), z.N)
		}
		b.Targets = make([]float64, len(z.Data))
		for i, y := range b.Labels {
			if y < 0 || y >= z.C {
				return 0, fmt.Errorf("mse-onehot: label %d out of range [0,%d)", y, z.C)
			}
			b.Targets[i*z.C+y] = 1
		}
	}
	return trainer.MSE{}.Eval(grad, z, b)
}

// HessVec is MSE's: the targets do not enter the second derivative.
func (OneHotMSE) HessVec(dst []float64, z *trainer.Tensor, rz []float64, b trainer.Batch) {
	trainer.MSE{}.HessVec(dst, z, rz, b)
}

// Run is one GD run at one step size.
type Run struct {
	LR        float64
	Threshold float64 // 2/η
	Model     string
	// Snapshots are the monitor's λ1 probes; Losses[i] is the full-batch
	// loss before step i+1, i.e. after step i.
	Snapshots []snapshot.Snapshot
	Losses    []float64
	Diverged  bool
	// Lambda1Init is λ1 at the first probe, Lambda1Max the largest probed.
	Lambda1Init, Lambda1Max float64
	// FirstNear is the first probe step with λ1 ≥ (1−Band)·2/η, FirstAbove
	// the first with λ1 > 2/η (when the alert condition first holds); 0:
	// never.
	FirstNear, FirstAbove int64
	// From FirstAbove on (ProbesAfter probes): the share of probes with
	// |λ1/(2/η) − 1| ≤ Band, the share above 2/η, and the median, smallest
	// and largest ratio λ1/(2/η).
	ProbesAfter   int
	InBand, Above float64
	// LateInBand is the share within ±Band among the LateProbes probes
	// after the crossing in the second half of the run: a first crossing
	// often overshoots before the first instability has grown, then
	// settles.
	LateProbes                      int
	LateInBand                      float64
	MedianRatio, MinRatio, MaxRatio float64
	// LossUps counts the steps after FirstAbove at which the loss went up:
	// GD at the edge of stability is non-monotone.
	LossUps   int
	FinalLoss float64
	TrainAcc  float64
	// ESD is the spectral density of the final Hessian (nil if not asked).
	ESD *snapshot.ESD
}

// MinProbesAfter is the least number of probes after the first crossing
// of 2/η from which Stays judges.
const MinProbesAfter = 10

// Stays reports whether λ1, once above 2/η, stayed within ±Band of it at
// nine probes out of ten or more (over at least MinProbesAfter probes).
func (r Run) Stays() bool { return r.ProbesAfter >= MinProbesAfter && r.InBand >= 0.9 }

// Result is the whole study.
type Result struct {
	Config   Config
	Runs     []Run
	AdamRuns []AdamRun
}

// Study runs full-batch GD at each step size of cfg on the first
// cfg.Images images of train, with the monitor writing to st.
func Study(ctx context.Context, cfg Config, train *data.Dataset, st *store.Store, log *slog.Logger) (Result, error) {
	if cfg.Images <= 0 || cfg.Every <= 0 || (len(cfg.LRs) > 0 && cfg.Steps <= 0) || (len(cfg.AdamLRs) > 0 && cfg.AdamSteps <= 0) ||
		len(cfg.LRs)+len(cfg.AdamLRs) == 0 || cfg.AdamEvery < 0 {
		return Result{}, fmt.Errorf("edge-of-stability: bad config %+v", cfg)
	}
	ds, err := train.Subset(0, min(cfg.Images, train.Len()))
	if err != nil {
		return Result{}, err
	}
	ds = ds.Flat()
	res := Result{Config: cfg}
	for _, lr := range cfg.LRs {
		r, err := runGD(ctx, cfg, lr, ds, st, log)
		if err != nil {
			return res, fmt.Errorf("η = %g: %w", lr, err)
		}
		res.Runs = append(res.Runs, r)
	}
	if res.AdamRuns, err = studyAdam(ctx, cfg, ds, st, log); err != nil {
		return res, err
	}
	return res, nil
}

func runID(lr float64) string { return "eos-lr" + strconv.FormatFloat(lr, 'g', -1, 64) }

func runGD(ctx context.Context, cfg Config, lr float64, ds *data.Dataset, st *store.Store, log *slog.Logger) (Run, error) {
	sizes := append(append([]int{ds.Shape.Size()}, cfg.Hidden...), ds.Classes)
	net, err := trainer.NewMLP(trainer.MLPConfig{Sizes: sizes, Activation: trainer.Tanh}, cfg.Seed)
	if err != nil {
		return Run{}, err
	}
	r := Run{LR: lr, Threshold: monitor.SharpnessThreshold(snapshot.SGD, lr, 0), Model: net.String()}
	id := runID(lr)
	if err := st.PutRun(snapshot.Run{ID: id, Model: net.String(), Optimizer: snapshot.SGD, Started: time.Now().UTC(),
		Config: map[string]string{"lr": strconv.FormatFloat(lr, 'g', -1, 64), "batch": "full",
			"images": strconv.Itoa(ds.Len()), "loss": OneHotMSE{}.Name(), "seed": strconv.FormatUint(cfg.Seed, 10)}}); err != nil {
		return r, err
	}
	// λ1 only, warm-started from the previous probe (and cold every tenth
	// probe, the monitor's default), on the full batch: the Hessian of the
	// objective GD descends.
	mon, err := monitor.New(id, monitor.Config{Every: cfg.Every, TopK: 1, NoTrace: true, NoESD: true, Seed: cfg.Seed},
		monitor.WithSink(st), monitor.WithLogger(log))
	if err != nil {
		return r, err
	}
	full := trainer.HeadBatch(ds, 0)
	record := func(_ context.Context, info trainer.StepInfo) error {
		r.Losses = append(r.Losses, info.Loss)
		return nil
	}
	opt := &trainer.SGD{LR: lr}
	_, err = trainer.Train(ctx, trainer.Config{
		Model: net, Loss: OneHotMSE{}, Optimizer: opt, Data: ds, BatchSize: 0, Steps: cfg.Steps, Seed: cfg.Seed,
		Hooks: []trainer.Hook{record, hessian.Hook(mon, hessian.HookOptions{Batch: full, Mode: trainer.ModeEval, Logger: log})},
	})
	if cerr := mon.Close(ctx); cerr != nil && err == nil {
		err = cerr
	}
	switch {
	case errors.Is(err, trainer.ErrDiverged):
		r.Diverged = true
		log.Warn("GD diverged", "lr", lr, "err", err)
	case err != nil:
		return r, err
	}
	if r.Snapshots, err = st.Snapshots(id, 0, -1); err != nil {
		return r, err
	}
	r.summarise()
	if r.TrainAcc, err = trainer.Accuracy(net, ds); err != nil {
		return r, err
	}
	if cfg.ESDSteps > 0 && !r.Diverged {
		op, err := hessian.NewExact(net, full, OneHotMSE{}, trainer.ModeEval)
		if err != nil {
			return r, err
		}
		e, _, err := estimators.ESD(ctx, op, estimators.ESDOptions{Probes: 1, Steps: cfg.ESDSteps, Seed: cfg.Seed + 2}, nil)
		if err != nil {
			return r, fmt.Errorf("final ESD: %w", err)
		}
		r.ESD = &snapshot.ESD{Nodes: e.Nodes, Weights: e.Weights, Probes: e.Probes, Steps: e.Steps, Sigma2: 1e-5}
	}
	log.Info("run done", "lr", lr, "threshold", r.Threshold, "first_above", r.FirstAbove, "in_band", r.InBand)
	return r, nil
}

// summarise fills the edge-of-stability statistics from the snapshots and
// losses. The phase at the edge starts at the first probe with λ1 > 2/η.
func (r *Run) summarise() {
	var ratios []float64
	var steps []int64
	for _, sn := range r.Snapshots {
		l1, ok := sn.Lambda1()
		if sn.Failed() || !ok {
			continue
		}
		if r.Lambda1Init == 0 {
			r.Lambda1Init = l1
		}
		r.Lambda1Max = max(r.Lambda1Max, l1)
		ratio := l1 / r.Threshold
		if r.FirstNear == 0 && ratio >= 1-Band {
			r.FirstNear = sn.Step
		}
		if r.FirstAbove == 0 && ratio > 1 {
			r.FirstAbove = sn.Step
		}
		if r.FirstAbove > 0 {
			ratios = append(ratios, ratio)
			steps = append(steps, sn.Step)
		}
	}
	if len(r.Losses) > 0 {
		r.FinalLoss = r.Losses[len(r.Losses)-1]
	}
	r.ProbesAfter = len(ratios)
	if len(ratios) == 0 {
		return
	}
	in, above, lateIn := 0, 0, 0
	for i, q := range ratios {
		inBand := math.Abs(q-1) <= Band
		if inBand {
			in++
		}
		if q > 1 {
			above++
		}
		if 2*steps[i] > int64(len(r.Losses)) {
			r.LateProbes++
			if inBand {
				lateIn++
			}
		}
	}
	if r.LateProbes > 0 {
		r.LateInBand = float64(lateIn) / float64(r.LateProbes)
	}
	r.InBand = float64(in) / float64(len(ratios))
	r.Above = float64(above) / float64(len(ratios))
	s := slices.Clone(ratios)
	slices.Sort(s)
	r.MinRatio, r.MaxRatio = s[0], s[len(s)-1]
	r.MedianRatio = s[len(s)/2]
	if len(s)%2 == 0 {
		r.MedianRatio = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	// Losses[i] is the loss after step i, so the count starts at the probe.
	for i := max(1, int(r.FirstAbove)); i < len(r.Losses); i++ {
		if r.Losses[i] > r.Losses[i-1] {
			r.LossUps++
		}
	}
}

// late formats LateInBand, or "—" without late probes.
func (r Run) late() string {
	if r.LateProbes == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*r.LateInBand)
}

func stepOrNever(s int64) string {
	if s == 0 {
		return "never"
	}
	return strconv.FormatInt(s, 10)
}

// Table is the study's markdown table: one row per step size.
func (r Result) Table() string {
	var b strings.Builder
	b.WriteString("| η | 2/η | λ1 at first probe | max λ1 | first step λ1 ≥ 0.8·2/η | first step λ1 > 2/η (alert) | probes after | within ±20% | within ±20%, 2nd half | above 2/η | λ1/(2/η) median [min, max] | loss rises | final loss | train acc |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|\n")
	for _, run := range r.Runs {
		fmt.Fprintf(&b, "| %g | %.4g | %.4g | %.4g | %s | %s | ", run.LR, run.Threshold, run.Lambda1Init, run.Lambda1Max,
			stepOrNever(run.FirstNear), stepOrNever(run.FirstAbove))
		if run.ProbesAfter == 0 {
			b.WriteString("0 | — | — | — | — | — | ")
		} else {
			fmt.Fprintf(&b, "%d | %.0f%% | %s | %.0f%% | %.3f [%.3f, %.3f] | %d | ", run.ProbesAfter, 100*run.InBand, run.late(), 100*run.Above,
				run.MedianRatio, run.MinRatio, run.MaxRatio, run.LossUps)
		}
		if run.Diverged {
			b.WriteString("diverged | — |\n")
			continue
		}
		fmt.Fprintf(&b, "%.5f | %.2f%% |\n", run.FinalLoss, 100*run.TrainAcc)
	}
	return b.String()
}

// Verdict says in one sentence per run whether the edge of stability
// showed.
func (r Result) Verdict() string {
	var b strings.Builder
	for _, run := range r.Runs {
		fmt.Fprintf(&b, "- η = %g (2/η = %.4g): ", run.LR, run.Threshold)
		switch {
		case run.Diverged:
			b.WriteString("GD diverged.\n")
		case run.FirstAbove == 0:
			fmt.Fprintf(&b, "λ1 went from %.4g at the first probe to at most %.4g and never exceeded 2/η in %d steps", run.Lambda1Init, run.Lambda1Max, len(run.Losses))
			if run.FirstNear > 0 {
				fmt.Fprintf(&b, " (within 20%% of it from step %d)", run.FirstNear)
			}
			b.WriteString(".\n")
		case run.ProbesAfter < MinProbesAfter:
			fmt.Fprintf(&b, "λ1 went from %.4g at the first probe to above 2/η at step %d (the HessianEdgeOfStability alert condition); "+
				"only %d probes follow, too few to tell whether it stays (max λ1/(2/η) = %.3f).\n",
				run.Lambda1Init, run.FirstAbove, run.ProbesAfter, run.MaxRatio)
		default:
			stays := "stayed"
			if !run.Stays() {
				stays = "did not stay"
			}
			fmt.Fprintf(&b, "λ1 went from %.4g at the first probe to above 2/η at step %d (the HessianEdgeOfStability alert condition), "+
				"then %s within ±20%% of 2/η (%.0f%% of the %d probes after, λ1/(2/η) in [%.3f, %.3f]; in the second half of the run %s of %d probes) "+
				"while the loss rose at %d steps and fell overall (%.4g → %.4g).\n",
				run.Lambda1Init, run.FirstAbove, stays, 100*run.InBand, run.ProbesAfter, run.MinRatio, run.MaxRatio, run.late(), run.LateProbes,
				run.LossUps, run.Losses[0], run.FinalLoss)
		}
	}
	return b.String()
}

// Setting describes the configuration in one markdown paragraph.
func (c Config) Setting() string {
	return fmt.Sprintf("Setting %q: full-batch gradient descent (no momentum) on the first %d MNIST training images, "+
		"MLP 784-%s-10 tanh (seed %d), squared loss to one-hot labels (PyTorch's MSELoss, mean over samples and classes), "+
		"η ∈ %v, %d steps; the monitor probes λ1 on the full batch every %d steps, warm-started (cold every 10th probe).",
		c.Name, c.Images, joinInts(c.Hidden), c.Seed, c.LRs, c.Steps, c.Every)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, "-")
}

// Write puts the table (edge-of-stability-NAME.md) and the plots
// (…-sharpness.png: λ1 against 2/η; …-loss.png; …-esd.png) into dir and
// returns the files written.
func (r Result) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "edge-of-stability-"+r.Config.Name)
	flagText := ""
	if r.Config.Name == "quick" {
		flagText = " --quick"
	}
	header := "<!-- written by: go run ./examples/edge-of-stability" + flagText + " -->\n\n"
	var files []string
	if len(r.AdamRuns) > 0 {
		// The Adam runs have their own files, so that either study can be
		// rerun alone (--no-sgd, --adam-lrs none) without touching the other's.
		md := header + r.Config.AdamSetting() + "\n\n" + r.AdamTable() + "\n" + r.AdamVerdict()
		name := base + "-adam.md"
		if err := os.WriteFile(name, []byte(md), 0o644); err != nil {
			return files, err
		}
		files = append(files, name)
		name = base + "-adam-sharpness.png"
		if err := r.adamPlot(name); err != nil {
			return files, err
		}
		files = append(files, name)
		name = base + "-adam-loss.png"
		if err := lossPlot(name, "Full-batch Adam on MNIST: training loss", adamLosses(r.AdamRuns)); err != nil {
			return files, err
		}
		files = append(files, name)
	}
	if len(r.Runs) == 0 {
		return files, nil
	}
	name := base + ".md"
	if err := os.WriteFile(name, []byte(header+r.Config.Setting()+"\n\n"+r.Table()+"\n"+r.Verdict()), 0o644); err != nil {
		return files, err
	}
	files = append(files, name)
	var series, esds []plot.Series
	for _, run := range r.Runs {
		label := "η=" + strconv.FormatFloat(run.LR, 'g', -1, 64)
		series = append(series, plot.Series{Label: label, Snapshots: run.Snapshots})
		if run.ESD != nil {
			esds = append(esds, plot.Series{Label: label, Snapshots: []snapshot.Snapshot{{Run: runID(run.LR), Step: int64(len(run.Losses)), ESD: run.ESD}}})
		}
	}
	name = base + "-sharpness.png"
	if err := plot.Save(name, plot.KindEigen, series, plot.Options{
		Title: "Full-batch GD on MNIST: sharpness λ1 against 2/η"}); err != nil {
		return files, err
	}
	files = append(files, name)
	name = base + "-loss.png"
	if err := lossPlot(name, "Full-batch GD on MNIST: training loss (non-monotone at the edge of stability)", gdLosses(r.Runs)); err != nil {
		return files, err
	}
	files = append(files, name)
	if len(esds) > 0 {
		name = base + "-esd.png"
		if err := plot.Save(name, plot.KindESD, esds, plot.Options{Title: "Hessian ESD after training (full batch)"}); err != nil {
			return files, err
		}
		files = append(files, name)
	}
	return files, nil
}

// lossCurve is one run's full-batch losses (Losses[i] after step i) and
// the step to mark (0: none).
type lossCurve struct {
	LR     float64
	Losses []float64
	Mark   int64
}

func gdLosses(runs []Run) []lossCurve {
	out := make([]lossCurve, len(runs))
	for i, r := range runs {
		out[i] = lossCurve{LR: r.LR, Losses: r.Losses, Mark: r.FirstAbove}
	}
	return out
}

func adamLosses(runs []AdamRun) []lossCurve {
	out := make([]lossCurve, len(runs))
	for i, r := range runs {
		out[i] = lossCurve{LR: r.LR, Losses: r.Losses, Mark: r.FirstAbove}
	}
	return out
}

// lossPlot draws the full-batch training loss of every run on a log axis,
// marking the probe at which the sharpness first exceeded its threshold.
func lossPlot(path, title string, runs []lossCurve) error {
	p := gplot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "full-batch loss"
	p.Y.Scale = gplot.LogScale{}
	p.Y.Tick.Marker = gplot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	for i, run := range runs {
		pts := make(plotter.XYs, 0, len(run.Losses))
		for s, l := range run.Losses {
			if l > 0 && !math.IsInf(l, 0) && !math.IsNaN(l) {
				pts = append(pts, plotter.XY{X: float64(s + 1), Y: l})
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add("η="+strconv.FormatFloat(run.LR, 'g', -1, 64), l)
		if run.Mark > 0 && run.Mark <= int64(len(run.Losses)) && run.Losses[run.Mark-1] > 0 {
			m, err := plotter.NewScatter(plotter.XYs{{X: float64(run.Mark), Y: run.Losses[run.Mark-1]}})
			if err != nil {
				return err
			}
			m.GlyphStyle.Color = color.Black
			m.GlyphStyle.Radius = vg.Points(3)
			p.Add(m)
		}
	}
	return p.Save(9*vg.Inch, 5*vg.Inch, path)
}

func main() {
	quick := flag.Bool("quick", false, "the quick setting (a few minutes on 2 cores) instead of the full one")
	out := flag.String("out", filepath.Join("docs", "findings"), "folder for the markdown table and the plots (empty: write nothing)")
	dbPath := flag.String("store", "", "bbolt store for the snapshots (default: a temporary file, removed at the end)")
	verbose := flag.Bool("v", false, "log every run")
	images := flag.Int("images", 0, "override the setting's subset size")
	hidden := flag.String("hidden", "", "override the setting's hidden sizes, e.g. 64,64")
	lrs := flag.String("lrs", "", "override the setting's step sizes, e.g. 0.6,0.8")
	steps := flag.Int64("steps", 0, "override the setting's number of GD steps")
	every := flag.Int64("every", 0, "override the setting's probe interval")
	adamLRs := flag.String("adam-lrs", "", "override the setting's Adam step sizes, e.g. 1e-3,2e-3 (\"none\": no Adam runs)")
	adamSteps := flag.Int64("adam-steps", 0, "override the setting's number of Adam steps")
	noSGD := flag.Bool("no-sgd", false, "skip the GD runs (only Adam; the GD files stay as they are)")
	flag.Parse()
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := Full()
	if *quick {
		cfg = Quick()
	}
	err := override(&cfg, *images, *hidden, *lrs, *steps, *every)
	if err == nil {
		err = overrideAdam(&cfg, *adamLRs, *adamSteps, *noSGD)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge-of-stability:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, *out, *dbPath, log); err != nil {
		fmt.Fprintln(os.Stderr, "edge-of-stability:", err)
		os.Exit(1)
	}
}

// override applies the flags that change a setting; an overridden setting
// is renamed "custom" so that it never overwrites the committed files.
func override(cfg *Config, images int, hidden, lrs string, steps, every int64) error {
	changed := images != 0 || hidden != "" || lrs != "" || steps != 0 || every != 0
	if images < 0 || steps < 0 || every < 0 {
		return errors.New("--images, --steps and --every must be positive")
	}
	if images > 0 {
		cfg.Images = images
	}
	if steps > 0 {
		cfg.Steps = steps
	}
	if every > 0 {
		cfg.Every = every
	}
	if hidden != "" {
		h, err := trainer.ParseSizes(hidden)
		if err != nil {
			return fmt.Errorf("--hidden: %w", err)
		}
		cfg.Hidden = h
	}
	if lrs != "" {
		l, err := parseLRs(lrs)
		if err != nil {
			return fmt.Errorf("--lrs: %w", err)
		}
		cfg.LRs = l
	}
	if changed {
		cfg.Name = "custom"
	}
	return nil
}

// overrideAdam applies the Adam flags, renaming the setting "custom" too.
func overrideAdam(cfg *Config, lrs string, steps int64, noSGD bool) error {
	if steps < 0 {
		return errors.New("--adam-steps must be positive")
	}
	if lrs != "" || steps != 0 {
		cfg.Name = "custom"
	}
	if steps > 0 {
		cfg.AdamSteps = steps
	}
	if noSGD {
		cfg.LRs = nil
	}
	switch lrs {
	case "":
	case "none":
		cfg.AdamLRs = nil
	default:
		l, err := parseLRs(lrs)
		if err != nil {
			return fmt.Errorf("--adam-lrs: %w", err)
		}
		cfg.AdamLRs = l
	}
	if len(cfg.LRs)+len(cfg.AdamLRs) == 0 {
		return errors.New("no runs left: both --no-sgd and --adam-lrs none")
	}
	return nil
}

// parseLRs parses comma-separated positive step sizes.
func parseLRs(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		lr, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(lr > 0) || math.IsInf(lr, 0) {
			return nil, fmt.Errorf("bad step size %q", f)
		}
		out = append(out, lr)
	}
	return out, nil
}

func run(ctx context.Context, cfg Config, out, dbPath string, log *slog.Logger) error {
	start := time.Now()
	train, _, err := data.LoadMNIST("")
	if err != nil {
		return err
	}
	if dbPath == "" {
		dir, err := os.MkdirTemp("", "edge-of-stability")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dbPath = filepath.Join(dir, "edge-of-stability.db")
	}
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := Study(ctx, cfg, train, st, log)
	if err != nil {
		return err
	}
	if len(res.Runs) > 0 {
		fmt.Println(cfg.Setting())
		fmt.Println()
		fmt.Print(res.Table())
		fmt.Println()
		fmt.Print(res.Verdict())
	}
	if len(res.AdamRuns) > 0 {
		fmt.Println()
		fmt.Println(cfg.AdamSetting())
		fmt.Println()
		fmt.Print(res.AdamTable())
		fmt.Println()
		fmt.Print(res.AdamVerdict())
	}
	if out != "" {
		files, err := res.Write(out)
		if err != nil {
			return err
		}
		fmt.Println()
		for _, f := range files {
			fmt.Println("wrote", f)
		}
	}
	fmt.Printf("\n%s setting: %s wall time (%s BLAS)\n", cfg.Name, time.Since(start).Round(time.Second), trainer.BLAS())
	return nil
}
