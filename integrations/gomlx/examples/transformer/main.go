// Command transformer trains a small causal character-level transformer
// with GoMLX (pure-Go backend simplego) on the Go distribution's own source
// files under $(go env GOROOT)/src, with hessmon's curvature monitor
// attached to GoMLX's train.Loop.
//
// The model is token and position embeddings, --layers pre-LayerNorm blocks
// of causal multi-head attention and a GELU MLP, a final LayerNorm and a
// dense head. Every --every steps the monitor probes the Hessian of the loss
// on a fixed batch of sequences, asynchronously, with exact HVPs (GoMLX grad
// of grad): λ1..k, the trace, the spectral density, and the trace of each
// block kind (embedding, attention QK, attention VO, MLP, norm, head).
// Snapshots go to a bbolt store that `hessmon show` and `hessmon plot`
// read; Prometheus metrics and the JSON API are served on --listen.
//
//	go run ./examples/transformer --steps 4000        # about 5 minutes on 2 cores
//	(cd ../.. && go run ./cmd/hessmon show --db integrations/gomlx/transformer.db)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	mlctx "github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/gomlx/gomlx/pkg/ml/layers"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"
	"github.com/gomlx/gomlx/pkg/ml/train"
	"github.com/gomlx/gomlx/pkg/ml/train/losses"
	"github.com/gomlx/gomlx/pkg/ml/train/optimizers"
	"github.com/prometheus/client_golang/prometheus"

	hgomlx "github.com/hessmon/hessmon/integrations/gomlx"
	"github.com/hessmon/hessmon/monitor"
	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

type config struct {
	Steps, Every int
	// FullEvery > 0 makes every FullEvery-th due step a full probe and the
	// rest light (0: the monitor's budget decides).
	FullEvery                  int
	Layers, Dim, Heads, SeqLen int
	Batch, ProbeBatch          int
	LR                         float64
	CorpusBytes                int
	Seed                       uint64
	TopK                       int
	DB, Run, Listen            string
}

func main() {
	hgomlx.UseFastVJPs() // matmul VJPs in contractions, before any graph is built
	var c config
	flag.IntVar(&c.Steps, "steps", 4000, "Adam steps (4000: about 5 minutes on 2 cores)")
	flag.IntVar(&c.Every, "every", 200, "probe the Hessian every N steps")
	flag.IntVar(&c.FullEvery, "full-every", 0, "every k-th due step a full probe, the others light (0: the monitor's 5% budget decides, with triggers)")
	flag.IntVar(&c.Layers, "layers", 2, "transformer blocks")
	flag.IntVar(&c.Dim, "dim", 32, "model width")
	flag.IntVar(&c.Heads, "heads", 4, "attention heads")
	flag.IntVar(&c.SeqLen, "seq", 32, "sequence length (characters)")
	flag.IntVar(&c.Batch, "batch", 16, "sequences per training step")
	flag.IntVar(&c.ProbeBatch, "probe-batch", 16, "sequences in the fixed probe batch")
	flag.Float64Var(&c.LR, "lr", 3e-3, "Adam learning rate")
	flag.IntVar(&c.CorpusBytes, "corpus-bytes", 4<<20, "bytes of Go source to read from GOROOT/src")
	flag.Uint64Var(&c.Seed, "seed", 1, "seed of the initialisation, the batches and the probe batch")
	flag.IntVar(&c.TopK, "topk", 5, "top eigenvalues per probe")
	flag.StringVar(&c.DB, "db", "transformer.db", "bbolt store for the snapshots")
	flag.StringVar(&c.Run, "run", "", "run id (default: transformer-<time>)")
	flag.StringVar(&c.Listen, "listen", "127.0.0.1:9464", `address for /metrics and /api/ ("off" disables)`)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, c, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("transformer", "err", err)
		os.Exit(1)
	}
}

// vocab maps bytes to token ids: printable ASCII, tab and newline, and one
// id for everything else.
const vocabSize = 96 + 2

func token(b byte) int32 {
	switch {
	case b == '\n':
		return 0
	case b == '\t':
		return 1
	case b >= 32 && b < 127:
		return int32(b-32) + 2
	default:
		return vocabSize - 1
	}
}

// goroot is $(go env GOROOT), or the toolchain's own root.
func goroot() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if s := strings.TrimSpace(string(out)); s != "" {
			return s
		}
	}
	return runtime.GOROOT()
}

// corpus reads the .go files under GOROOT/src in lexical order, up to n bytes.
func corpus(n int) ([]int32, string, error) {
	root := filepath.Join(goroot(), "src")
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, root, fmt.Errorf("reading the Go sources: %w", err)
	}
	slices.Sort(files)
	// Spread the budget over the tree: take files at a stride.
	var total int64
	sizes := make([]int64, len(files))
	for i, f := range files {
		if st, err := os.Stat(f); err == nil {
			sizes[i] = st.Size()
			total += st.Size()
		}
	}
	stride := max(1, int(total/int64(max(n, 1))))
	var toks []int32
	for i := 0; i < len(files) && len(toks) < n; i += stride {
		b, err := os.ReadFile(files[i])
		if err != nil {
			continue
		}
		for _, c := range b {
			toks = append(toks, token(c))
		}
	}
	if len(toks) < 1000 {
		return nil, root, fmt.Errorf("only %d characters of Go source under %s", len(toks), root)
	}
	return toks[:min(len(toks), n)], root, nil
}

// windows is a train.Dataset of random windows of the corpus: inputs are
// SeqLen tokens, labels the next token at each position.
type windows struct {
	toks      []int32
	seq, size int
	rng       *rand.Rand
}

func (w *windows) Name() string { return "goroot-src" }
func (w *windows) Reset()       {}
func (w *windows) batch(starts []int) (in, lab *tensors.Tensor) {
	x := make([]int32, 0, len(starts)*w.seq)
	y := make([]int32, 0, len(starts)*w.seq)
	for _, s := range starts {
		x = append(x, w.toks[s:s+w.seq]...)
		y = append(y, w.toks[s+1:s+w.seq+1]...)
	}
	return tensors.FromFlatDataAndDimensions(x, len(starts), w.seq),
		tensors.FromFlatDataAndDimensions(y, len(starts), w.seq, 1)
}
func (w *windows) starts(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = w.rng.IntN(len(w.toks) - w.seq - 1)
	}
	return s
}
func (w *windows) Yield() (spec any, inputs, labels []*tensors.Tensor, err error) {
	in, lab := w.batch(w.starts(w.size))
	return nil, []*tensors.Tensor{in}, []*tensors.Tensor{lab}, nil
}

// model builds the transformer. Scopes name the block kinds (see kind).
func model(c config) train.ModelFn {
	return func(ctx *mlctx.Context, _ any, in []*graph.Node) []*graph.Node {
		ids := in[0] // [B, T] int32
		g := ids.Graph()
		x := layers.Embedding(ctx.In("embed"), ids, dtypes.Float64, vocabSize, c.Dim)
		pos := ctx.In("embed").VariableWithShape("positions", shapes.Make(dtypes.Float64, c.SeqLen, c.Dim)).ValueGraph(g)
		x = graph.Add(x, graph.InsertAxes(pos, 0))
		for l := range c.Layers {
			b := ctx.In(fmt.Sprintf("block%d", l))
			h := layers.LayerNormalization(b.In("norm1"), x, -1).Done()
			h = layers.MultiHeadAttention(b.In("attn"), h, h, h, c.Heads, c.Dim/c.Heads).UseCausalMask().Done()
			x = graph.Add(x, h)
			h = layers.LayerNormalization(b.In("norm2"), x, -1).Done()
			h = layers.DenseWithBias(b.In("mlp").In("fc1"), h, 4*c.Dim)
			h = activations.Gelu(h)
			h = layers.DenseWithBias(b.In("mlp").In("fc2"), h, c.Dim)
			x = graph.Add(x, h)
		}
		x = layers.LayerNormalization(ctx.In("norm_final"), x, -1).Done()
		return []*graph.Node{layers.DenseWithBias(ctx.In("head"), x, vocabSize)}
	}
}

// kind groups the variables for per-kind Hessian traces.
func kind(name string) string {
	switch {
	case strings.Contains(name, "/embed/"):
		return "embedding"
	case strings.Contains(name, "/MultiHeadAttention/query/"), strings.Contains(name, "/MultiHeadAttention/key/"):
		return "attention QK"
	case strings.Contains(name, "/MultiHeadAttention/"):
		return "attention VO"
	case strings.Contains(name, "/mlp/"):
		return "MLP"
	case strings.Contains(name, "layer_normalization"):
		return "norm"
	case strings.Contains(name, "/head/"):
		return "head"
	default:
		return "other"
	}
}

func run(ctx context.Context, c config, log *slog.Logger) error {
	if c.Dim%c.Heads != 0 {
		return fmt.Errorf("--dim %d is not a multiple of --heads %d", c.Dim, c.Heads)
	}
	toks, root, err := corpus(c.CorpusBytes)
	if err != nil {
		return err
	}
	if c.Run == "" {
		c.Run = "transformer-" + time.Now().UTC().Format("20060102-150405")
	}
	log.Info("corpus", "root", root, "characters", len(toks))
	rng := rand.New(rand.NewPCG(c.Seed, 0x7f))
	ds := &windows{toks: toks, seq: c.SeqLen, size: c.Batch, rng: rng}
	probeIn, probeLab := ds.batch(ds.starts(c.ProbeBatch))

	// simplego v0.26.0's default parallel ops can deadlock (and race) on
	// attention graphs; sequential ops cannot.
	backend, err := simplego.New("ops_sequential")
	if err != nil {
		return err
	}
	defer backend.Finalize()
	mctx := mlctx.New()
	if err := mctx.SetRNGStateFromSeed(int64(c.Seed)); err != nil {
		return err
	}
	modelFn := model(c)
	lossFn := losses.SparseCategoricalCrossEntropyLogits
	tr := train.NewTrainer(backend, mctx, modelFn, lossFn,
		optimizers.Adam().LearningRate(c.LR).Done(), nil, nil)
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
	mon, err := monitor.New(c.Run, monitor.Config{Every: int64(c.Every), Async: true, TopK: c.TopK, FullEvery: c.FullEvery},
		monitor.WithSink(st), monitor.WithSink(exp), monitor.WithWarmStore(st), monitor.WithLogger(log))
	if err != nil {
		return err
	}
	att, err := hgomlx.Attach(ctx, loop, mon, hgomlx.AttachOptions{
		Config: hgomlx.Config{Model: modelFn, Loss: lossFn, Kind: kind,
			Inputs: []*tensors.Tensor{probeIn}, Labels: []*tensors.Tensor{probeLab}},
		Optimizer: snapshot.Adam, Beta1: 0.9,
		Adam:   &hgomlx.AdamParams{}, // GoMLX's defaults: snapshots also get λ1(P⁻¹H)
		Logger: log,
	})
	if err != nil {
		return err
	}
	defer att.Close() // normally already closed by the loop's OnEnd
	desc := fmt.Sprintf("gomlx transformer L%d d%d h%d T%d char-level (GOROOT/src)", c.Layers, c.Dim, c.Heads, c.SeqLen)
	if err := st.PutRun(snapshot.Run{ID: c.Run, Model: desc, Optimizer: snapshot.Adam, Started: time.Now().UTC(),
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
			return ctx.Err() // Ctrl-C: stop training; OnEnd does not run, the deferred Close does.
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
	fmt.Printf("trained %d steps in %s; %d probes (%d skipped, %d failed), %d HVPs, %.1f s probing\n",
		c.Steps, time.Since(start).Round(time.Second), s.Probes, s.Skipped, s.Failures, s.HVPs, s.ProbeSeconds)
	fmt.Printf("parameters: %d; store %s, run %s\n", att.Dim(), c.DB, c.Run)
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
