package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hessmon/hessmon/internal/gemmbench"
	"github.com/hessmon/hessmon/internal/torchref"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/trainer"
	"github.com/hessmon/hessmon/trainer/hessian"
)

func runBench(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(e.stderr, `hessmon bench: measure what curvature costs, as ratios measured in one run.

  hessmon bench hvp       HVP time ÷ gradient time on one model and batch
  hessmon bench warm      HVPs per probe with and without warm starts along a training run
  hessmon bench overhead  training time with the monitor ÷ without
  hessmon bench probe     HVPs per probe by estimate, round 1's estimators against the current ones
  hessmon bench store     store file size and write/read times of a long run
  hessmon bench scale     HVP, probe time, peak RSS and store bytes per probe for MLPs of 0.1–12M parameters

Run 'hessmon bench <kind> --help' for flags.`)
		if len(args) == 0 {
			return usageErr("bench needs a kind: hvp, warm, overhead, probe, store or scale")
		}
		return nil
	}
	switch args[0] {
	case "hvp":
		return benchHVP(ctx, e, args[1:])
	case "warm":
		return benchWarm(ctx, e, args[1:])
	case "overhead":
		return benchOverhead(ctx, e, args[1:])
	case "probe":
		return benchProbe(ctx, e, args[1:])
	case "store":
		return benchStore(ctx, e, args[1:])
	case "scale":
		return benchScale(ctx, e, args[1:])
	}
	return usageErr("unknown bench %q: want hvp, warm, overhead, probe, store or scale", args[0])
}

type hvpBench struct {
	Model        string           `json:"model"`
	Params       int              `json:"params"`
	Batch        int              `json:"batch"`
	BLAS         trainer.BLASInfo `json:"blas"`
	GOMAXPROCS   int              `json:"gomaxprocs"`
	Reps         int              `json:"reps"`
	GradSeconds  float64          `json:"grad_seconds"`
	HVPSeconds   float64          `json:"hvp_seconds"`
	HVPOverGrad  float64          `json:"hvp_over_grad"`
	HVPFull      float64          `json:"hvp_with_forward_seconds"`
	FullOverGrad float64          `json:"hvp_with_forward_over_grad"`
	HVPGFlops    float64          `json:"hvp_gflops"`
	BLASSeconds  float64          `json:"blas_seconds"`
	BLASGFlops   float64          `json:"blas_gflops"`
	HVPOverBLAS  float64          `json:"hvp_gflops_over_blas_gflops"`
	Probe        hvpProbeBench    `json:"probe"`
	Torch        *torchBench      `json:"torch,omitempty"`
	Float32      *precisionBench  `json:"float32,omitempty"` // --precision float32
}

// hvpProbeBench is the monitor's real workload: HVPs on the probe batch.
type hvpProbeBench struct {
	Batch       int     `json:"batch"`
	HVPSeconds  float64 `json:"hvp_seconds"`
	HVPGFlops   float64 `json:"hvp_gflops"`
	BLASGFlops  float64 `json:"blas_gflops"`
	HVPOverBLAS float64 `json:"hvp_gflops_over_blas_gflops"`
}

// torchBench is what bench/torch_hvp.py prints, plus hessmon's ratios.
type torchBench struct {
	Version        string  `json:"torch"`
	Threads        int     `json:"threads"`
	Reps           int     `json:"reps"`
	GradSeconds    float64 `json:"grad_seconds"`
	HVPSeconds     float64 `json:"hvp_seconds"`
	HVPFullSeconds float64 `json:"hvp_full_seconds"`
	FunctionalHVP  float64 `json:"functional_hvp_seconds"`
	HVRelDiff      float64 `json:"hv_rel_diff"`
	// HVPRatio is hessmon's hvp_seconds ÷ torch's hvp_seconds (both keep
	// the state of the forward pass: torch its whole gradient graph, as
	// PyHessian does). FreshRatio is hvp_seconds ÷ torch's double backward
	// with a fresh forward pass (the usual recipe, and what
	// torch.autograd.functional.hvp does), FullRatio both with a fresh
	// forward pass.
	HVPRatio   float64 `json:"hessmon_over_torch_hvp_retained_graph"`
	FreshRatio float64 `json:"hessmon_over_torch_double_backward"`
	FullRatio  float64 `json:"hessmon_with_forward_over_torch_double_backward"`
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func benchHVP(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench hvp", "time the exact gradient and the exact Hessian-vector product on one batch "+
		"(medians over --reps after a warm-up), and the BLAS alone on the HVP's own matrix products in the same loop. "+
		"hvp_seconds is one Apply of the HVP operator, whose forward pass is cached as in every estimator; "+
		"hvp_with_forward_seconds includes a fresh forward pass; blas_gflops is the rate of the HVP's GEMMs run alone; "+
		"probe is the same on the monitor's probe batch. --vs-torch runs bench/torch_hvp.py on the same weights, batch and v "+
		"(Debian: apt-get install python3-torch). HESSMON_BLAS=auto|openblas|gonum chooses the BLAS.",
		"hessmon bench hvp --model mlp --hidden 128,128 --act tanh --batch 1000 --vs-torch --json")
	var mf modelFlags
	mf.register(fs, "128,128", "tanh")
	batch := fs.Int("batch", 1000, "batch size (the first B training images)")
	probeBatch := fs.Int("probe-batch", 128, "batch of the probe-workload HVP")
	reps := fs.Int("reps", 15, "timed repetitions")
	asJSON := fs.Bool("json", false, "print JSON")
	vsTorch := fs.Bool("vs-torch", false, "also time PyTorch's double-backward HVP with --torch-script (MLPs only)")
	script := fs.String("torch-script", "bench/torch_hvp.py", "the PyTorch reference script")
	python := fs.String("python", "/usr/bin/python3", "Python with torch (Debian's python3-torch installs into /usr/bin/python3)")
	torchThreads := fs.Int("torch-threads", 0, "torch.set_num_threads for --vs-torch (0: torch's default)")
	precision := fs.String("precision", "float64", "float32 also times float32 HVPs against float64 in one loop (and torch in float32 with --vs-torch)")
	if err := parse(fs, args); err != nil {
		return err
	}
	prec, err := hessian.ParsePrecision(*precision)
	if err != nil {
		return usageErr("--precision: %v", err)
	}
	if *batch <= 0 || *reps <= 0 || *probeBatch <= 0 {
		return usageErr("--batch, --probe-batch and --reps must be positive")
	}
	net, train, _, err := mf.setup()
	if err != nil {
		return err
	}
	b, pb := trainer.HeadBatch(train, *batch), trainer.HeadBatch(train, *probeBatch)
	loss := trainer.CrossEntropy{}
	op, err := hessian.NewExact(net, b, loss, trainer.ModeEval)
	if err != nil {
		return err
	}
	pop, err := hessian.NewExact(net, pb, loss, trainer.ModeEval)
	if err != nil {
		return err
	}
	tape := net.NewTape()
	n := net.Dim()
	g, v, hv, phv := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range v {
		v[i] = float64((i*7919)%13) - 6
	}
	// The products an HVP issues on each batch: with the input columns
	// that are zero in the whole batch dropped (MNIST's border pixels).
	list := func(bt trainer.Batch) ([]trainer.GEMM, error) {
		t := net.NewTape()
		if _, err := t.Forward(bt, loss, trainer.ModeEval); err != nil {
			return nil, err
		}
		return t.HVPGEMMs()
	}
	hl, err := list(b)
	if err != nil {
		return err
	}
	phl, err := list(pb)
	if err != nil {
		return err
	}
	gemms, pgemms := gemmbench.NewTimer(hl), gemmbench.NewTimer(phl)
	fullTape := net.NewTape()
	var tg, th, tf, tb, tp, tpb []float64
	for r := -2; r < *reps; r++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if _, err := tape.Grad(g, b, loss, trainer.ModeEval); err != nil {
			return err
		}
		t1 := time.Now()
		if err := op.Apply(hv, v); err != nil {
			return err
		}
		t2 := time.Now()
		if _, err := fullTape.Forward(b, loss, trainer.ModeEval); err != nil {
			return err
		}
		if err := fullTape.HVP(hv, v); err != nil {
			return err
		}
		t3 := time.Now()
		gt, err := gemms.Run(ctx)
		if err != nil {
			return err
		}
		t4 := time.Now()
		if err := pop.Apply(phv, v); err != nil {
			return err
		}
		t5 := time.Now()
		pgt, err := pgemms.Run(ctx)
		if err != nil {
			return err
		}
		if r >= 0 {
			tg = append(tg, t1.Sub(t0).Seconds())
			th = append(th, t2.Sub(t1).Seconds())
			tf = append(tf, t3.Sub(t2).Seconds())
			tb = append(tb, gt.Seconds())
			tp = append(tp, t5.Sub(t4).Seconds())
			tpb = append(tpb, pgt.Seconds())
		}
	}
	res := hvpBench{Model: net.String(), Params: n, Batch: b.Len(), BLAS: trainer.BLAS(), GOMAXPROCS: runtime.GOMAXPROCS(0), Reps: *reps,
		GradSeconds: median(tg), HVPSeconds: median(th), HVPFull: median(tf), BLASSeconds: median(tb)}
	res.HVPOverGrad = res.HVPSeconds / res.GradSeconds
	res.FullOverGrad = res.HVPFull / res.GradSeconds
	res.HVPGFlops = gemms.Flops() / res.HVPSeconds / 1e9
	res.BLASGFlops = gemms.Flops() / res.BLASSeconds / 1e9
	res.HVPOverBLAS = res.HVPGFlops / res.BLASGFlops
	res.Probe = hvpProbeBench{Batch: pb.Len(), HVPSeconds: median(tp)}
	res.Probe.HVPGFlops = pgemms.Flops() / res.Probe.HVPSeconds / 1e9
	res.Probe.BLASGFlops = pgemms.Flops() / median(tpb) / 1e9
	res.Probe.HVPOverBLAS = res.Probe.HVPGFlops / res.Probe.BLASGFlops
	if *vsTorch {
		if res.Torch, err = runTorch(ctx, *python, *script, *torchThreads, "float64", net, b, v, hv, *reps); err != nil {
			return err
		}
		res.Torch.HVPRatio = res.HVPSeconds / res.Torch.HVPSeconds
		res.Torch.FreshRatio = res.HVPSeconds / res.Torch.HVPFullSeconds
		res.Torch.FullRatio = res.HVPFull / res.Torch.HVPFullSeconds
	}
	if prec == snapshot.Float32 {
		torch := &torchRun{python: *python, script: *script, threads: *torchThreads, hv: hv}
		if res.Float32, err = benchHVP32(ctx, net, b, pb, v, *reps, torch, *vsTorch); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(e.stdout, "%s, %d params, batch %d (medians of %d)\n", res.Model, res.Params, res.Batch, res.Reps)
	fmt.Fprintf(e.stdout, "  BLAS                %s, GOMAXPROCS %d\n", res.BLAS, res.GOMAXPROCS)
	fmt.Fprintf(e.stdout, "  gradient            %8.2f ms\n", res.GradSeconds*1e3)
	fmt.Fprintf(e.stdout, "  HVP (cached fwd)    %8.2f ms   %.2f× gradient   %.1f GFLOP/s\n", res.HVPSeconds*1e3, res.HVPOverGrad, res.HVPGFlops)
	fmt.Fprintf(e.stdout, "  HVP (with forward)  %8.2f ms   %.2f× gradient\n", res.HVPFull*1e3, res.FullOverGrad)
	fmt.Fprintf(e.stdout, "  its GEMMs alone     %8.2f ms   %.1f GFLOP/s (HVP at %.0f%% of it)\n", res.BLASSeconds*1e3, res.BLASGFlops, 100*res.HVPOverBLAS)
	fmt.Fprintf(e.stdout, "  probe HVP, batch %-3d %7.2f ms   %.1f GFLOP/s (%.0f%% of its GEMMs alone)\n", res.Probe.Batch, res.Probe.HVPSeconds*1e3, res.Probe.HVPGFlops, 100*res.Probe.HVPOverBLAS)
	if t := res.Torch; t != nil {
		fmt.Fprintf(e.stdout, "  torch %s (%d threads), |Hv − hessmon's| / |Hv| = %.1e\n", t.Version, t.Threads, t.HVRelDiff)
		fmt.Fprintf(e.stdout, "    double backward, retained graph  %8.2f ms   hessmon HVP %.2f× it\n", t.HVPSeconds*1e3, t.HVPRatio)
		fmt.Fprintf(e.stdout, "    double backward, fresh forward   %8.2f ms   hessmon HVP %.2f×, with forward %.2f× it\n", t.HVPFullSeconds*1e3, t.FreshRatio, t.FullRatio)
		fmt.Fprintf(e.stdout, "    autograd.functional.hvp          %8.2f ms\n", t.FunctionalHVP*1e3)
	}
	if res.Float32 != nil {
		printHVP32(e.stdout, res.Float32, res.Batch)
	}
	return nil
}

// runTorch exports the model, batch, v and hessmon's H·v and times torch's
// double-backward HVP on them with the reference script.
func runTorch(ctx context.Context, python, script string, threads int, dtype string, net *trainer.Network, b trainer.Batch, v, hv []float64, reps int) (*torchBench, error) {
	dir, err := os.MkdirTemp("", "hessmon-torch-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "reference.safetensors")
	if err := torchref.Save(path, net, b, v, hv); err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, python, script, "--in", path, "--reps", strconv.Itoa(reps), "--threads", strconv.Itoa(threads), "--dtype", dtype)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("bench hvp --vs-torch: %s %s: %w: %s (Debian: apt-get install python3-torch; --python, --torch-script)", python, script, err, strings.TrimSpace(stderr.String()))
	}
	var t torchBench
	if err := json.Unmarshal(out, &t); err != nil {
		return nil, fmt.Errorf("bench hvp --vs-torch: reading %s's output: %w", script, err)
	}
	return &t, nil
}
