// Command own-loop is a training loop that is not hessmon's, with the
// curvature monitor attached.
//
// The model, its gradient, the optimiser and the loop are the user's own
// (mlp.go: a tanh MLP on MNIST written over gonum's BLAS). hessmon only gets
// the gradient function: its Hessian-vector products are central
// differences of that gradient on a fixed probe batch (hvp.FiniteDiff), run
// in the background while training goes on. Snapshots go to a bbolt store
// that `hessmon show` reads, and Prometheus metrics sit on the user's own
// registry, served with the JSON API on --listen.
//
//	go run ./examples/own-loop --steps 600
//	go run ./cmd/hessmon show --db own-loop.db
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hessmon/hessmon/data"
	"github.com/hessmon/hessmon/hvp"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// config is the command line.
type config struct {
	Steps, Every      int64
	Hidden, Batch     int
	ProbeBatch        int
	LR, Momentum      float64
	Seed              uint64
	DB, Run, Listen   string
	TrainSamples      int  // 0: all 60,000
	recordProbeParams bool // tests: keep the weights of each due step
}

// result is what a run did, for main's summary and the tests.
type result struct {
	Model      mlp
	Run        string
	Steps      int64
	LastLoss   float64
	TestAcc    float64
	Stats      monitor.Stats
	ProbeX     []float64 // the fixed probe batch
	ProbeY     []int
	ProbeParam map[int64][]float64 // step → weights at each due step (recordProbeParams)
}

func main() {
	var c config
	flag.Int64Var(&c.Steps, "steps", 600, "SGD steps")
	flag.Int64Var(&c.Every, "every", 50, "probe the Hessian every N steps")
	flag.IntVar(&c.Hidden, "hidden", 128, "hidden units")
	flag.IntVar(&c.Batch, "batch", 64, "mini-batch size")
	flag.IntVar(&c.ProbeBatch, "probe-batch", 128, "size of the fixed probe batch")
	flag.Float64Var(&c.LR, "lr", 0.05, "learning rate")
	flag.Float64Var(&c.Momentum, "momentum", 0.9, "heavy-ball momentum")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed of the initialisation, the shuffling and the probe batch")
	flag.StringVar(&c.DB, "db", "own-loop.db", "bbolt store for the snapshots")
	flag.StringVar(&c.Run, "run", "", "run id (default: own-loop-<time>)")
	flag.StringVar(&c.Listen, "listen", "127.0.0.1:9464", `address for /metrics and /api/ ("off" disables)`)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	res, err := run(ctx, c, log)
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("own-loop", "err", err)
		os.Exit(1)
	}
	printSummary(os.Stdout, res, c.DB)
}

// run trains the user's MLP on MNIST with the monitor attached.
func run(ctx context.Context, c config, log *slog.Logger) (result, error) {
	train, test, err := data.LoadMNIST("") // the data; no hessmon trainer package is used
	if err != nil {
		return result{}, err
	}
	if c.TrainSamples > 0 {
		if train, err = train.Subset(0, min(c.TrainSamples, train.Len())); err != nil {
			return result{}, err
		}
	}
	if c.Run == "" {
		c.Run = "own-loop-" + time.Now().UTC().Format("20060102-150405")
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x0a11))
	m := mlp{in: 784, hidden: c.Hidden, out: 10}
	params := make([]float64, m.dim())
	m.init(params, rng.Float64)
	res := result{Model: m, Run: c.Run, ProbeParam: map[int64][]float64{}}

	// The fixed probe batch and the gradient the HVPs differentiate.
	probe := rng.Perm(train.Len())[:c.ProbeBatch]
	res.ProbeX, res.ProbeY = train.Gather(probe)
	probeGrad := func(dst, p []float64) error { m.lossGrad(dst, p, res.ProbeX, res.ProbeY); return nil }
	// hessmon's operator of a due step: central differences of probeGrad at
	// a copy of params, so training may go on while it runs.
	newOperator := func() (hvp.Operator, error) { return hvp.NewFiniteDiff(probeGrad, params), nil }

	// ---- hessmon, the set-up: a store, metrics on our own registry, async probes.
	st, err := store.Open(c.DB, store.Options{})
	if err != nil {
		return res, err
	}
	defer st.Close()
	reg, exp := prometheus.NewRegistry(), metrics.NewExporter()
	reg.MustRegister(exp)
	mon, err := monitor.New(c.Run, monitor.Config{Every: c.Every, Async: true},
		monitor.WithStore(st), monitor.WithSink(exp), monitor.WithLogger(log)) // the store is sink and warm store
	if err != nil {
		return res, err
	}
	// ---- end of the set-up; one call per step and a Close below.

	// Optional: describe the run for `hessmon show`, and serve our registry.
	if err := st.PutRun(snapshot.Run{ID: c.Run, Model: m.String(), Optimizer: snapshot.SGD, Started: time.Now().UTC(),
		Config: map[string]string{"lr": fmt.Sprint(c.LR), "momentum": fmt.Sprint(c.Momentum), "batch": fmt.Sprint(c.Batch),
			"steps": fmt.Sprint(c.Steps), "every": fmt.Sprint(c.Every), "probe_batch": fmt.Sprint(c.ProbeBatch)}}); err != nil {
		return res, err
	}
	stopServer, err := serve(c.Listen, reg, st, log)
	if err != nil {
		return res, err
	}
	defer stopServer()

	grad, velocity := make([]float64, len(params)), make([]float64, len(params))
	order := rng.Perm(train.Len())
	for step, pos := int64(1), 0; step <= c.Steps && ctx.Err() == nil; step++ {
		if pos+c.Batch > len(order) {
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			pos = 0
		}
		x, y := train.Gather(order[pos : pos+c.Batch])
		pos += c.Batch
		loss := m.lossGrad(grad, params, x, y)
		for i, g := range grad {
			velocity[i] = c.Momentum*velocity[i] + g
			params[i] -= c.LR * velocity[i]
		}
		res.Steps, res.LastLoss = step, loss

		if c.recordProbeParams && mon.Due(step) {
			res.ProbeParam[step] = append([]float64(nil), params...)
		}
		// ---- hessmon: the step (the operator is built only if a probe is due).
		if err := mon.Step(ctx, monitor.StepInfo{Step: step, Loss: loss, LearningRate: c.LR, Optimizer: snapshot.SGD, Beta1: c.Momentum}, newOperator); err != nil && ctx.Err() == nil {
			log.Warn("monitor", "step", step, "err", err)
		}
	}
	// Finish the last probe (cancel it if interrupted) and write the warm state.
	if err := mon.Close(ctx); err != nil && ctx.Err() == nil {
		return res, err
	}
	res.Stats = mon.Stats()
	tx, ty := test.Gather(nil)
	res.TestAcc = accuracy(m.predict(params, tx, len(ty)), ty)
	return res, ctx.Err()
}

// serve puts the registry and the JSON API on addr, as a user would on
// their own mux.
func serve(addr string, reg *prometheus.Registry, src api.Source, log *slog.Logger) (stop func(), err error) {
	if addr == "off" || addr == "" {
		return func() {}, nil
	}
	at, halt, err := api.Start(addr, api.NewServer(reg, src))
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	log.Info("serving", "metrics", "http://"+at.String()+"/metrics", "api", "http://"+at.String()+"/api/runs")
	return func() { _ = halt() }, nil
}

func accuracy(pred, y []int) float64 {
	var ok int
	for i := range y {
		if pred[i] == y[i] {
			ok++
		}
	}
	return float64(ok) / float64(len(y))
}

func printSummary(w io.Writer, r result, db string) {
	fmt.Fprintf(w, "run %s: %s, %d params, %d steps, last loss %.4f, test accuracy %.4f\n",
		r.Run, r.Model, r.Model.dim(), r.Steps, r.LastLoss, r.TestAcc)
	fmt.Fprintf(w, "probes: %d (%d failed, %d skipped while one was running), %d HVPs, %.1fs probing\n",
		r.Stats.Probes, r.Stats.Failures, r.Stats.Skipped, r.Stats.HVPs, r.Stats.ProbeSeconds)
	fmt.Fprintf(w, "store: %s (inspect: go run ./cmd/hessmon show --db %s --run %s)\n", db, db, r.Run)
}
