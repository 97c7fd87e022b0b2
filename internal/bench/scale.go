package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

// ScaleRow is one model size and precision of `hessmon bench scale`.
type ScaleRow struct {
	Params    int    `json:"params"`
	Precision string `json:"precision"`
	// HVPms is the median HVP wall time, HVPOverGrad its ratio to the
	// median gradient on the same batch.
	HVPms       float64 `json:"hvp_ms"`
	HVPOverGrad float64 `json:"hvp_over_grad"`
	// FullProbeSeconds is the mean synchronous full probe (monitor.Probe
	// with the defaults, warm after the first), LightProbeSeconds the mean
	// light probe (monitor.AnalyzeLight), HVPShare the full probes' HVP seconds
	// ÷ their wall seconds.
	FullProbeSeconds  float64 `json:"full_probe_seconds"`
	LightProbeSeconds float64 `json:"light_probe_seconds"`
	HVPShare          float64 `json:"hvp_share"`
	// PeakRSSBytes is the process's peak resident set (VmHWM): a row runs
	// in a process of its own. StoreBytesPerProbe is the store's bytes in
	// use (snapshots and the warm state the monitor writes) ÷ probes.
	PeakRSSBytes       int64  `json:"peak_rss_bytes"`
	StoreBytesPerProbe int64  `json:"store_bytes_per_probe"`
	Error              string `json:"error,omitempty"`
}

// ScaleOptions configure one row.
type ScaleOptions struct {
	// Precision is "float64" or "float32".
	Precision string
	// Batch is the probe batch (its first samples of Data).
	Batch int
	// TrainSteps of SGD before probing, so that the Hessian is a trained
	// one's (a few suffice: the cost does not depend on the weights).
	TrainSteps int64
	// Probes full and as many light probes; Timing products and gradients
	// for the HVP and gradient medians.
	Probes, Timing int
	// Dir holds the row's store file.
	Dir  string
	Seed uint64
}

// probeOperator is what a row probes: an HVP operator of either precision
// with the model's parameter blocks.
type probeOperator interface {
	hvp.Operator
	Blocks() []estimators.Block
}

// Operator builds the probe operator at a precision ("float64" or
// "float32") through hessian.NewOperator, as train --precision does.
func Operator(net *trainer.Network, b trainer.Batch, precision string) (probeOperator, error) {
	prec, err := hessian.ParsePrecision(precision)
	if err != nil {
		return nil, err
	}
	op, err := hessian.NewOperator(net, b, trainer.CrossEntropy{}, trainer.ModeEval, hessian.Options{Precision: prec})
	if err != nil {
		return nil, err
	}
	po, ok := op.(probeOperator)
	if !ok {
		return nil, fmt.Errorf("bench: the %s operator has no parameter blocks", precision)
	}
	return po, nil
}

// Scale measures one row on net and data: it trains, times HVPs and
// gradients, runs full probes through a monitor with a store, then light
// probes, and reads the peak RSS last.
func Scale(ctx context.Context, net *trainer.Network, ds *data.Dataset, opt ScaleOptions) (ScaleRow, error) {
	row := ScaleRow{Params: net.Dim(), Precision: opt.Precision}
	if opt.TrainSteps > 0 {
		if _, err := trainer.Train(ctx, trainer.Config{Model: net, Loss: trainer.CrossEntropy{}, Optimizer: &trainer.SGD{LR: 0.05, Momentum: 0.9},
			Data: ds, BatchSize: 64, Steps: opt.TrainSteps, Seed: opt.Seed}); err != nil {
			return row, err
		}
	}
	batch := trainer.HeadBatch(ds, opt.Batch)
	op, err := Operator(net, batch, opt.Precision)
	if err != nil {
		return row, err
	}
	// The gradient is float64's in both precisions (the float32 path has
	// no gradient of its own): hvp_over_grad compares against it.
	grad, err := hessian.NewExact(net, batch, trainer.CrossEntropy{}, trainer.ModeEval)
	if err != nil {
		return row, err
	}
	if err := timeProducts(op, grad.Gradient, &row, max(opt.Timing, 1)); err != nil {
		return row, err
	}
	grad = nil // its copy of the parameters is not part of a probe's memory
	if err := fullProbes(ctx, op, &row, opt); err != nil {
		return row, err
	}
	if err := lightProbes(ctx, op, &row, opt); err != nil {
		return row, err
	}
	row.PeakRSSBytes, err = PeakRSS()
	return row, err
}

// timeProducts records the median HVP and gradient wall times.
func timeProducts(op hvp.Operator, gradient func(dst []float64) error, row *ScaleRow, reps int) error {
	n := op.Dim()
	v, dst := make([]float64, n), make([]float64, n)
	for i := range v {
		v[i] = float64(i%7) - 3
	}
	hv, gr := make([]float64, reps), make([]float64, reps)
	for i := range reps {
		start := time.Now()
		if err := op.Apply(dst, v); err != nil {
			return err
		}
		hv[i] = time.Since(start).Seconds()
		start = time.Now()
		if err := gradient(dst); err != nil {
			return err
		}
		gr[i] = time.Since(start).Seconds()
	}
	slices.Sort(hv)
	slices.Sort(gr)
	row.HVPms = hv[reps/2] * 1e3
	row.HVPOverGrad = hv[reps/2] / gr[reps/2]
	return nil
}

// fullProbes runs opt.Probes synchronous full probes through a monitor with
// the defaults and a store as sink and warm store.
func fullProbes(ctx context.Context, op probeOperator, row *ScaleRow, opt ScaleOptions) error {
	path := filepath.Join(opt.Dir, fmt.Sprintf("scale-%d-%s.db", row.Params, opt.Precision))
	st, err := store.Open(path, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	var last snapshot.Snapshot
	// A cold probe of 10M parameters outlasts the default 2-minute cap on
	// a loaded 2-core machine; a user at that size raises it too.
	cfg := monitor.Config{Seed: opt.Seed, MaxDuration: time.Hour}
	mon, err := monitor.New("bench-scale", cfg, monitor.WithSink(st), monitor.WithWarmStore(st),
		monitor.WithSink(monitor.SinkFunc(func(s snapshot.Snapshot) error { last = s; return nil })))
	if err != nil {
		return err
	}
	timed := &Timed{Op: op}
	var wall time.Duration
	for i := range opt.Probes {
		start := time.Now()
		if _, err := mon.Probe(ctx, int64(i+1), timed, monitor.StepInfo{Step: int64(i + 1), Blocks: op.Blocks()}); err != nil {
			return err
		}
		wall += time.Since(start)
		if last.Failure != "" {
			return fmt.Errorf("bench: full probe %d failed: %s: %s", i+1, last.Failure, last.Detail)
		}
	}
	if err := mon.Close(ctx); err != nil {
		return err
	}
	row.FullProbeSeconds = wall.Seconds() / float64(opt.Probes)
	row.HVPShare = timed.Elapsed.Seconds() / wall.Seconds()
	ss, err := st.Stats()
	if err != nil {
		return err
	}
	row.StoreBytesPerProbe = ss.InUseBytes / int64(opt.Probes)
	return nil
}

// lightProbes runs a cold light probe, then opt.Probes light probes, each
// warm from the last (the monitor's own light probe, AnalyzeLight), and
// records their mean.
func lightProbes(ctx context.Context, op hvp.Operator, row *ScaleRow, opt ScaleOptions) error {
	cfg := monitor.Config{Seed: opt.Seed}
	var wall time.Duration
	var warm *monitor.LightWarm
	for i := range opt.Probes + 1 {
		var s snapshot.Snapshot
		start := time.Now()
		next, _, err := monitor.AnalyzeLight(ctx, &s, op, cfg, monitor.Inputs{}, warm)
		if i > 0 {
			wall += time.Since(start)
		}
		if err != nil {
			return fmt.Errorf("bench: light probe: %w", err)
		}
		warm = next
	}
	row.LightProbeSeconds = wall.Seconds() / float64(opt.Probes)
	return nil
}
