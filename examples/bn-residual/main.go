// Command bn-residual reruns the PyHessian paper's architecture study at
// MNIST scale: the small ResNet family in four variants, {BatchNorm, none} ×
// {residual connections, none}, at two depths, trained with the same seed,
// data, optimiser and number of epochs while the hessmon monitor tracks λ1.
// Each trained variant then gets a final analysis on one fixed batch: the
// top five eigenvalues with their residual norms, the trace with its
// standard error and the spectral density (ESD).
//
// It writes a markdown table and the plots (λ1 over training per variant,
// the final ESDs overlaid) into docs/findings/ and prints the table:
//
//	go run ./examples/bn-residual --quick   # a few minutes on 2 cores
//	go run ./examples/bn-residual           # the full setting
//
// The same flags give the same table: every random choice is seeded.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/plot"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// Config is one setting of the study. Every variant shares all of it.
type Config struct {
	Name        string // "quick" or "full": names the output files
	TrainImages int    // the first TrainImages of the MNIST training set
	TestImages  int    // the first TestImages of the MNIST test set
	Width       int    // channels of the first stage
	Blocks      []int  // basic blocks per stage, one depth each (depth 2+4·blocks)
	// SGD with momentum and weight decay for Epochs epochs, the last one
	// at LR/10: PyHessian's recipe (η = 0.1, momentum 0.9, weight decay
	// 5e-4, step decay), compressed. The decay also lets BatchNorm's
	// running statistics catch up with the weights, which an eval-mode
	// Hessian needs.
	Epochs      int
	BatchSize   int
	LR          float64
	Momentum    float64
	WeightDecay float64
	// The monitor during training: λ1 on a fixed batch of ProbeBatch
	// training images, ProbesPerRun times over the run.
	ProbeBatch   int
	ProbesPerRun int
	// The final analysis on the first FinalBatch training images, split
	// into chunks of FinalChunk (a conv net's im2col memory grows with the
	// batch): λ1..TopK to relative residual EigenTol, the trace to relative
	// standard error TraceRelTol, the ESD with ESDSteps Lanczos steps.
	FinalBatch  int
	FinalChunk  int
	TopK        int
	EigenTol    float64
	TraceRelTol float64
	ESDSteps    int
	Seed        uint64
}

// Quick is the setting of --quick: a few minutes on 2 cores.
func Quick() Config {
	return Config{
		Name: "quick", TrainImages: 3000, TestImages: 2000, Width: 8, Blocks: []int{1, 3},
		Epochs: 3, BatchSize: 50, LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4,
		ProbeBatch: 64, ProbesPerRun: 9,
		FinalBatch: 64, FinalChunk: 64, TopK: 5, EigenTol: 1e-4, TraceRelTol: 0.1, ESDSteps: 30,
		Seed: 1,
	}
}

// Full is the default setting.
func Full() Config {
	return Config{
		Name: "full", TrainImages: 10000, TestImages: 10000, Width: 8, Blocks: []int{1, 3},
		Epochs: 4, BatchSize: 50, LR: 0.05, Momentum: 0.9, WeightDecay: 5e-4,
		ProbeBatch: 128, ProbesPerRun: 16,
		FinalBatch: 256, FinalChunk: 128, TopK: 5, EigenTol: 1e-4, TraceRelTol: 0.05, ESDSteps: 60,
		Seed: 1,
	}
}

// Variant is one architecture of the study.
type Variant struct {
	BN, Skip bool
	Blocks   int
}

// Depth is the number of weight layers, as in ResNet-20/56 naming.
func (v Variant) Depth() int { return trainer.ResNetConfig{Blocks: v.Blocks, Stages: 2}.Depth() }

// Label names the variant in tables and legends.
func (v Variant) Label() string {
	bn, skip := "BN", "skip"
	if !v.BN {
		bn = "no BN"
	}
	if !v.Skip {
		skip = "no skip"
	}
	return bn + ", " + skip
}

// ID is the variant's run id in the store.
func (v Variant) ID() string {
	bn, skip := "bn", "skip"
	if !v.BN {
		bn = "nobn"
	}
	if !v.Skip {
		skip = "noskip"
	}
	return fmt.Sprintf("resnet%d-%s-%s", v.Depth(), bn, skip)
}

// Variants lists the study's variants: for each depth, BN × skip.
func (c Config) Variants() []Variant {
	var out []Variant
	for _, b := range c.Blocks {
		for _, bn := range []bool{true, false} {
			for _, skip := range []bool{true, false} {
				out = append(out, Variant{BN: bn, Skip: skip, Blocks: b})
			}
		}
	}
	return out
}

// Row is one trained and analysed variant.
type Row struct {
	Variant
	Model    string
	Params   int
	Steps    int64
	Diverged bool // training stopped on a NaN/Inf loss: no analysis
	// TrainLoss is the mean loss on the final-analysis batch (eval mode).
	TrainLoss float64
	TestAcc   float64
	// Final analysis, with certificates.
	Eigenvalues []float64
	Residuals   []float64
	Trace       snapshot.Trace
	// Lambda1Train is λ1 on the same batch with BatchNorm in batch-
	// statistics mode (equal to Eigenvalues[0] without BatchNorm).
	Lambda1Train, Lambda1TrainResidual float64
	ESD                                *snapshot.ESD
	HVPs                               int
	// Trajectory is the monitor's snapshots during training (λ1 only);
	// Final is the final analysis as a snapshot.
	Trajectory []snapshot.Snapshot
	Final      *snapshot.Snapshot
	Seconds    float64 // wall time of training + analysis; not in the table
}

// Result is the whole study.
type Result struct {
	Config Config
	Rows   []Row
}

// Study trains and analyses every variant of cfg on train/test. Snapshots
// go to st (one run per variant, and one "-final" run for the final
// analysis).
func Study(ctx context.Context, cfg Config, train, test *data.Dataset, st *store.Store, log *slog.Logger) (Result, error) {
	if len(cfg.Blocks) == 0 || cfg.Width <= 0 || cfg.Epochs <= 0 || cfg.BatchSize <= 0 {
		return Result{}, fmt.Errorf("bn-residual: bad config %+v", cfg)
	}
	ds, err := train.Subset(0, min(cfg.TrainImages, train.Len()))
	if err != nil {
		return Result{}, err
	}
	testSet, err := test.Subset(0, min(cfg.TestImages, test.Len()))
	if err != nil {
		return Result{}, err
	}
	ds, testSet = Normalize(ds), Normalize(testSet)
	res := Result{Config: cfg}
	for _, v := range cfg.Variants() {
		row, err := runVariant(ctx, cfg, v, ds, testSet, st, log)
		if err != nil {
			return res, fmt.Errorf("%s: %w", v.ID(), err)
		}
		res.Rows = append(res.Rows, row)
	}
	return res, nil
}

func runVariant(ctx context.Context, cfg Config, v Variant, ds, test *data.Dataset, st *store.Store, log *slog.Logger) (Row, error) {
	start := time.Now()
	net, err := trainer.NewResNet(trainer.ResNetConfig{In: ds.Shape, Classes: ds.Classes, Width: cfg.Width,
		Blocks: v.Blocks, Stages: 2, BN: v.BN, Skip: v.Skip}, cfg.Seed)
	if err != nil {
		return Row{}, err
	}
	HeInit(net, cfg.Seed)
	row := Row{Variant: v, Model: net.String(), Params: net.Dim()}
	steps := int64(cfg.Epochs * (ds.Len() / cfg.BatchSize))
	row.Steps = steps
	if err := st.PutRun(snapshot.Run{ID: v.ID(), Model: net.String(), Optimizer: snapshot.SGD, Started: start.UTC(),
		Config: map[string]string{"lr": fmtF(cfg.LR), "momentum": fmtF(cfg.Momentum), "weight_decay": fmtF(cfg.WeightDecay), "batch": strconv.Itoa(cfg.BatchSize),
			"steps": strconv.FormatInt(steps, 10), "images": strconv.Itoa(ds.Len()), "seed": strconv.FormatUint(cfg.Seed, 10)}}); err != nil {
		return row, err
	}
	every := max(1, steps/int64(max(1, cfg.ProbesPerRun)))
	mon, err := monitor.New(v.ID(), monitor.Config{Every: every, TopK: 1, NoTrace: true, NoESD: true, Seed: cfg.Seed},
		monitor.WithSink(st), monitor.WithLogger(log))
	if err != nil {
		return row, err
	}
	probe := trainer.HeadBatch(ds, cfg.ProbeBatch)
	opt := &trainer.SGD{LR: cfg.LR, Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay}
	decayAt := steps - int64(ds.Len()/cfg.BatchSize)
	decay := func(_ context.Context, info trainer.StepInfo) error {
		if info.Step == decayAt {
			info.Optimizer.SetLearningRate(cfg.LR / 10)
		}
		return nil
	}
	// During training the monitor probes the Hessian SGD descends: batch
	// statistics (ModeTrain). While η is large the running statistics lag
	// the weights too much for an eval-mode Hessian to mean anything.
	_, err = trainer.Train(ctx, trainer.Config{
		Model: net, Loss: trainer.CrossEntropy{}, Optimizer: opt, Data: ds,
		BatchSize: cfg.BatchSize, Steps: steps, Seed: cfg.Seed,
		Hooks: []trainer.Hook{hessian.Hook(mon, hessian.HookOptions{Batch: probe, Mode: trainer.ModeTrain, Logger: log}), decay},
	})
	if cerr := mon.Close(ctx); cerr != nil && err == nil {
		err = cerr
	}
	switch {
	case errors.Is(err, trainer.ErrDiverged):
		row.Diverged = true
		log.Warn("training diverged; the variant gets no final analysis", "variant", v.ID(), "err", err)
	case err != nil:
		return row, err
	}
	if row.Trajectory, err = st.Snapshots(v.ID(), 0, -1); err != nil {
		return row, err
	}
	if row.TestAcc, err = trainer.Accuracy(net, test); err != nil {
		return row, err
	}
	if !row.Diverged {
		if err := analyse(ctx, cfg, &row, net, ds, opt, st); err != nil {
			return row, err
		}
	}
	row.Seconds = time.Since(start).Seconds()
	log.Info("variant done", "variant", v.ID(), "params", row.Params, "test_acc", row.TestAcc,
		"lambda1", first(row.Eigenvalues), "trace", row.Trace.Value, "hvps", row.HVPs, "seconds", row.Seconds)
	return row, nil
}

// analyse is PyHessian's analysis of the trained model on a fixed batch,
// BatchNorm in eval mode: top-k eigenpairs (certified by their residuals),
// the trace with the top-k subspace taken exactly (Hutchinson on the rest)
// and the ESD by stochastic Lanczos quadrature.
func analyse(ctx context.Context, cfg Config, row *Row, net *trainer.Network, ds *data.Dataset, opt trainer.Optimizer, st *store.Store) error {
	head, err := ds.Subset(0, min(cfg.FinalBatch, ds.Len()))
	if err != nil {
		return err
	}
	batch := trainer.HeadBatch(head, 0)
	op, err := hessian.NewChunked(net, batch, trainer.CrossEntropy{}, trainer.ModeEval, cfg.FinalChunk)
	if err != nil {
		return err
	}
	row.TrainLoss = op.(interface{ Loss() float64 }).Loss()
	// hessmon's one analysis pipeline, as the monitor and `hessmon analyze`
	// run it: eigen solve to 2000 HVPs, trace to 400, then the ESD.
	var sn snapshot.Snapshot
	_, cost, err := monitor.Analyze(ctx, &sn, op, monitor.Config{
		TopK: cfg.TopK, EigenTol: cfg.EigenTol, EigenMaxHVPs: 2000,
		TraceRelTol: cfg.TraceRelTol, TraceMaxHVPs: 400, ESDSteps: cfg.ESDSteps,
		MaxHVPs: 2000 + 400 + cfg.ESDSteps + 10, Seed: cfg.Seed,
	}, monitor.Inputs{})
	if err != nil {
		return fmt.Errorf("final analysis: %w", err)
	}
	row.Eigenvalues, row.Residuals = sn.Eigenvalues, sn.Residuals
	row.Trace, row.ESD = *sn.Trace, sn.ESD
	row.HVPs = cost.Total()
	// With BatchNorm, λ1 also with batch statistics (each chunk normalised
	// by its own mean and variance, differentiated through): the
	// curvature SGD sees, which can differ from the eval-mode one by a
	// large factor. Without BatchNorm the two modes are the same Hessian.
	row.Lambda1Train, row.Lambda1TrainResidual = sn.Eigenvalues[0], sn.Residuals[0]
	if row.BN {
		opTrain, err := hessian.NewChunked(net, batch, trainer.CrossEntropy{}, trainer.ModeTrain, cfg.FinalChunk)
		if err != nil {
			return err
		}
		e, _, err := estimators.TopEigen(ctx, opTrain, estimators.EigenOptions{K: 1, Tol: cfg.EigenTol, MaxHVPs: 2000, Seed: cfg.Seed}, nil)
		if err != nil {
			return fmt.Errorf("λ1 with batch statistics: %w", err)
		}
		row.Lambda1Train, row.Lambda1TrainResidual = e.Values[0], e.Residuals[0]
		row.HVPs += e.HVPs
	}
	// The final analysis is a snapshot like any other, so `hessmon plot`
	// and `hessmon show` read it from the store too.
	final := row.final(opt)
	row.Final = &final
	if err := st.PutRun(snapshot.Run{ID: final.Run, Model: row.Model, Optimizer: snapshot.SGD, Started: final.Time}); err != nil {
		return err
	}
	return st.PutSnapshot(final)
}

// final is the final analysis as a snapshot.
func (r Row) final(opt trainer.Optimizer) snapshot.Snapshot {
	tr := r.Trace
	sn := snapshot.Snapshot{
		Run: r.ID() + "-final", Step: r.Steps, Time: time.Now().UTC(), Loss: r.TrainLoss,
		LearningRate: opt.LearningRate(), Optimizer: snapshot.Optimizer(opt.Name()), Beta1: opt.Beta1(),
		Eigenvalues: r.Eigenvalues, Residuals: r.Residuals, Trace: &tr, ESD: r.ESD, HVPs: r.HVPs,
	}
	sn.SharpnessThreshold = monitor.SharpnessThreshold(sn.Optimizer, sn.LearningRate, sn.Beta1)
	if len(r.Eigenvalues) > 0 && sn.SharpnessThreshold > 0 {
		sn.SharpnessRatio = r.Eigenvalues[0] / sn.SharpnessThreshold
	}
	return sn
}

// MNIST's pixel mean and standard deviation, as torchvision's
// transforms.Normalize((0.1307,), (0.3081,)) uses them.
const mnistMean, mnistStd = 0.1307, 0.3081

// Normalize returns a copy of d with standardised pixels, the input
// scaling every PyTorch MNIST recipe uses; networks without BatchNorm
// train far more slowly on raw [0, 1] pixels.
func Normalize(d *data.Dataset) *data.Dataset {
	c := *d
	c.X = make([]float64, len(d.X))
	for i, x := range d.X {
		c.X[i] = (x - mnistMean) / mnistStd
	}
	return &c
}

// HeInit re-initialises net as PyHessian's CIFAR ResNets are initialised:
// every convolution weight from N(0, 2/(k²·out channels)) (He, fan-out)
// and convolution biases at 0 (PyHessian's convolutions have none).
// trainer's default, PyTorch's uniform ±1/√fan-in, shrinks the signal at
// every layer, and the no-BN variants then barely train in a short run.
func HeInit(net *trainer.Network, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x4e1))
	p := net.Params()
	info := net.ParamInfo()
	for i, pi := range info {
		if len(pi.Shape) != 4 || !strings.HasSuffix(pi.Name, "weight") {
			continue
		}
		sd := math.Sqrt(2 / float64(pi.Shape[0]*pi.Shape[2]*pi.Shape[3]))
		for j := pi.Offset; j < pi.Offset+pi.Len; j++ {
			p[j] = sd * rng.NormFloat64()
		}
		if i+1 < len(info) && info[i+1].Name == strings.TrimSuffix(pi.Name, "weight")+"bias" {
			clear(p[info[i+1].Offset : info[i+1].Offset+info[i+1].Len])
		}
	}
}

func first(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return xs[0]
}

func fmtF(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// sig formats x to 4 significant digits: enough to compare variants, few
// enough that the table reads at a glance.
func sig(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }

// Table is the study's markdown table: one row per variant.
func (r Result) Table() string {
	var b strings.Builder
	b.WriteString("| variant | depth | params | test acc | train loss | λ1 (residual) | λ2..λ5 | trace ± stderr (probes) | λ1, batch stats (residual) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---|---:|---:|\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %d | %d | %.2f%% | ", row.Label(), row.Depth(), row.Params, 100*row.TestAcc)
		if row.Diverged {
			b.WriteString("diverged | — | — | — | — |\n")
			continue
		}
		rest := make([]string, 0, len(row.Eigenvalues))
		for _, l := range row.Eigenvalues[1:] {
			rest = append(rest, sig(l))
		}
		fmt.Fprintf(&b, "%.4f | %s (%.0e) | %s | %s ± %s (%d) | %s (%.0e) |\n", row.TrainLoss, sig(row.Eigenvalues[0]), row.Residuals[0],
			strings.Join(rest, ", "), sig(row.Trace.Value), sig(row.Trace.StdErr), row.Trace.Probes,
			sig(row.Lambda1Train), row.Lambda1TrainResidual)
	}
	return b.String()
}

// Setting describes the configuration in one markdown paragraph.
func (c Config) Setting() string {
	return fmt.Sprintf("Setting %q: MNIST, first %d training and %d test images; ResNet width %d, blocks per stage %v "+
		"(2 stages), He-normal init; inputs standardised; SGD η = %g (η/10 in the last epoch), momentum %g, weight decay %g, "+
		"batch %d, %d epochs, seed %d; monitor λ1 (BatchNorm with batch statistics) on %d fixed training images "+
		"%d times per run; final analysis on the first %d training images (BatchNorm in eval mode): top-%d eigenvalues "+
		"to relative residual %g, trace (top-%d deflated Hutchinson) to relative stderr %g, ESD with %d Lanczos steps; with BatchNorm, λ1 also with batch statistics (per chunk of %d images).",
		c.Name, c.TrainImages, c.TestImages, c.Width, c.Blocks, c.LR, c.Momentum, c.WeightDecay, c.BatchSize, c.Epochs, c.Seed,
		c.ProbeBatch, c.ProbesPerRun, c.FinalBatch, c.TopK, c.EigenTol, c.TopK, c.TraceRelTol, c.ESDSteps, c.FinalChunk)
}

// Write puts the table (bn-residual-NAME.md) and the plots
// (bn-residual-NAME-lambda1-dDEPTH.png, bn-residual-NAME-esd-dDEPTH.png)
// into dir and returns the files written.
func (r Result) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base := filepath.Join(dir, "bn-residual-"+r.Config.Name)
	md := "<!-- written by: go run ./examples/bn-residual" + map[bool]string{true: " --quick", false: ""}[r.Config.Name == "quick"] +
		" -->\n\n" + r.Config.Setting() + "\n\n" + r.Table()
	files := []string{base + ".md"}
	if err := os.WriteFile(files[0], []byte(md), 0o644); err != nil {
		return nil, err
	}
	for _, b := range r.Config.Blocks {
		var traj, finals []plot.Series
		depth := 0
		for _, row := range r.Rows {
			if row.Blocks != b {
				continue
			}
			depth = row.Depth()
			traj = append(traj, plot.Series{Label: row.Label(), Snapshots: row.Trajectory})
			if row.Final != nil {
				finals = append(finals, plot.Series{Label: row.Label(), Snapshots: []snapshot.Snapshot{*row.Final}})
			}
		}
		name := fmt.Sprintf("%s-lambda1-d%d.png", base, depth)
		if err := saveTrajectory(name, traj, fmt.Sprintf("λ1 during training (batch statistics), ResNet-%d (width %d) on MNIST", depth, r.Config.Width)); err != nil {
			return files, err
		}
		files = append(files, name)
		if len(finals) == 0 {
			continue
		}
		name = fmt.Sprintf("%s-esd-d%d.png", base, depth)
		if err := plot.Save(name, plot.KindESD, finals, plot.Options{
			Title: fmt.Sprintf("Final Hessian ESD, ResNet-%d (width %d), %d images", depth, r.Config.Width, r.Config.FinalBatch)}); err != nil {
			return files, err
		}
		files = append(files, name)
	}
	return files, nil
}

// saveTrajectory draws λ1 over training with the SGD stability threshold
// (2+2β)/η. The threshold jumps tenfold when η decays for the last epoch;
// when the threshold before the decay is drawn (the plot leaves out one
// far above every λ1), the y-axis stops a little above it, so that the
// jump does not flatten the curves.
func saveTrajectory(path string, series []plot.Series, title string) error {
	fig, err := plot.New(plot.KindEigen, series, plot.Options{Title: title})
	if err != nil {
		return err
	}
	top, thr := 0.0, 0.0
	for _, s := range series {
		for _, sn := range s.Snapshots {
			if l1, ok := sn.Lambda1(); ok && !sn.Failed() {
				top = max(top, l1)
			}
		}
		if len(s.Snapshots) > 0 {
			thr = max(thr, s.Snapshots[0].SharpnessThreshold)
		}
	}
	if thr <= offScale*top {
		top = max(top, thr)
	}
	if top > 0 {
		for _, p := range fig.Plots() {
			p.Y.Min, p.Y.Max = 0, 1.15*top
		}
	}
	return fig.Save(path, plot.DefaultWidth, plot.DefaultHeight)
}

// offScale mirrors monitor/plot: a threshold above offScale × the largest
// eigenvalue is left out of the figure and named "(off scale)".
const offScale = 2.5

func main() {
	quick := flag.Bool("quick", false, "the quick setting (a few minutes on 2 cores) instead of the full one")
	out := flag.String("out", filepath.Join("docs", "findings"), "folder for the markdown table and the plots (empty: write nothing)")
	dbPath := flag.String("store", "", "bbolt store for the snapshots (default: a temporary file, removed at the end)")
	verbose := flag.Bool("v", false, "log every variant and probe failure")
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, cfg, *out, *dbPath, log); err != nil {
		fmt.Fprintln(os.Stderr, "bn-residual:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config, out, dbPath string, log *slog.Logger) error {
	start := time.Now()
	train, test, err := data.LoadMNIST("")
	if err != nil {
		return err
	}
	if dbPath == "" {
		dir, err := os.MkdirTemp("", "bn-residual")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		dbPath = filepath.Join(dir, "bn-residual.db")
	}
	st, err := store.Open(dbPath, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := Study(ctx, cfg, train, test, st, log)
	if err != nil {
		return err
	}
	fmt.Println(cfg.Setting())
	fmt.Println()
	fmt.Print(res.Table())
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
