package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

// HVPResult is the JSON of `hessmon bench hvp`.
type HVPResult struct {
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
	Probe        HVPProbe         `json:"probe"`
	Torch        *Torch           `json:"torch,omitempty"`
	Float32      *Precision       `json:"float32,omitempty"` // --precision float32
}

// HVPProbe is the monitor's real workload: HVPs on the probe batch.
type HVPProbe struct {
	Batch       int     `json:"batch"`
	HVPSeconds  float64 `json:"hvp_seconds"`
	HVPGFlops   float64 `json:"hvp_gflops"`
	BLASGFlops  float64 `json:"blas_gflops"`
	HVPOverBLAS float64 `json:"hvp_gflops_over_blas_gflops"`
}

// Torch is what bench/torch_hvp.py prints, plus hessmon's ratios.
type Torch struct {
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

// TorchOptions is how --vs-torch runs the reference script.
type TorchOptions struct {
	Python, Script string
	Threads        int
}

// HVPOptions configures HVP. Torch nil skips the PyTorch reference.
type HVPOptions struct {
	Net               *trainer.Network
	Batch, ProbeBatch trainer.Batch
	Reps              int
	Precision         snapshot.Precision
	Torch             *TorchOptions
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

// hvpLoop is one bench hvp measurement: the operators, the GEMM timers and
// the per-rep times.
type hvpLoop struct {
	o              HVPOptions
	op, pop        *hessian.Exact
	gemms, pgemms  *gemmbench.Timer
	g, v, hv, phv  []float64
	tg, th, tf, tb []float64
	tp, tpb        []float64
	tape, fullTape *trainer.Tape
	loss           trainer.CrossEntropy
}

// HVP times the exact gradient and HVP on o.Batch (medians over o.Reps after
// two warm-ups), the BLAS alone on the HVP's own GEMMs in the same loop, the
// probe-batch HVP, and optionally float32 and torch.
func HVP(ctx context.Context, o HVPOptions) (HVPResult, error) {
	l, err := newHVPLoop(o)
	if err != nil {
		return HVPResult{}, err
	}
	for r := -2; r < o.Reps; r++ {
		if err := l.rep(ctx, r >= 0); err != nil {
			return HVPResult{}, err
		}
	}
	res := l.result()
	if t := o.Torch; t != nil {
		if res.Torch, err = runTorch(ctx, *t, "float64", o.Net, o.Batch, l.v, l.hv, o.Reps); err != nil {
			return HVPResult{}, err
		}
		res.Torch.HVPRatio = res.HVPSeconds / res.Torch.HVPSeconds
		res.Torch.FreshRatio = res.HVPSeconds / res.Torch.HVPFullSeconds
		res.Torch.FullRatio = res.HVPFull / res.Torch.HVPFullSeconds
	}
	if o.Precision == snapshot.Float32 {
		if res.Float32, err = hvp32(ctx, o, l.v, l.hv); err != nil {
			return HVPResult{}, err
		}
	}
	return res, nil
}

func newHVPLoop(o HVPOptions) (*hvpLoop, error) {
	l := &hvpLoop{o: o}
	var err error
	if l.op, err = hessian.NewExact(o.Net, o.Batch, l.loss, trainer.ModeEval); err != nil {
		return nil, err
	}
	if l.pop, err = hessian.NewExact(o.Net, o.ProbeBatch, l.loss, trainer.ModeEval); err != nil {
		return nil, err
	}
	n := o.Net.Dim()
	l.g, l.v, l.hv, l.phv = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range l.v {
		l.v[i] = float64((i*7919)%13) - 6
	}
	hl, err := l.list(o.Batch)
	if err != nil {
		return nil, err
	}
	phl, err := l.list(o.ProbeBatch)
	if err != nil {
		return nil, err
	}
	l.gemms, l.pgemms = gemmbench.NewTimer(hl), gemmbench.NewTimer(phl)
	l.tape, l.fullTape = o.Net.NewTape(), o.Net.NewTape()
	return l, nil
}

// list is the products an HVP issues on bt: with the input columns that
// are zero in the whole batch dropped (MNIST's border pixels).
func (l *hvpLoop) list(bt trainer.Batch) ([]trainer.GEMM, error) {
	t := l.o.Net.NewTape()
	if _, err := t.Forward(bt, l.loss, trainer.ModeEval); err != nil {
		return nil, err
	}
	return t.HVPGEMMs()
}

// rep runs one repetition and, if keep, records its times.
func (l *hvpLoop) rep(ctx context.Context, keep bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b := l.o.Batch
	t0 := time.Now()
	if _, err := l.tape.Grad(l.g, b, l.loss, trainer.ModeEval); err != nil {
		return err
	}
	t1 := time.Now()
	if err := l.op.Apply(l.hv, l.v); err != nil {
		return err
	}
	t2 := time.Now()
	if _, err := l.fullTape.Forward(b, l.loss, trainer.ModeEval); err != nil {
		return err
	}
	if err := l.fullTape.HVP(l.hv, l.v); err != nil {
		return err
	}
	t3 := time.Now()
	gt, err := l.gemms.Run(ctx)
	if err != nil {
		return err
	}
	t4 := time.Now()
	if err := l.pop.Apply(l.phv, l.v); err != nil {
		return err
	}
	t5 := time.Now()
	pgt, err := l.pgemms.Run(ctx)
	if err != nil {
		return err
	}
	if keep {
		l.tg = append(l.tg, t1.Sub(t0).Seconds())
		l.th = append(l.th, t2.Sub(t1).Seconds())
		l.tf = append(l.tf, t3.Sub(t2).Seconds())
		l.tb = append(l.tb, gt.Seconds())
		l.tp = append(l.tp, t5.Sub(t4).Seconds())
		l.tpb = append(l.tpb, pgt.Seconds())
	}
	return nil
}

func (l *hvpLoop) result() HVPResult {
	res := HVPResult{Model: l.o.Net.String(), Params: l.o.Net.Dim(), Batch: l.o.Batch.Len(), BLAS: trainer.BLAS(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), Reps: l.o.Reps,
		GradSeconds: median(l.tg), HVPSeconds: median(l.th), HVPFull: median(l.tf), BLASSeconds: median(l.tb)}
	res.HVPOverGrad = res.HVPSeconds / res.GradSeconds
	res.FullOverGrad = res.HVPFull / res.GradSeconds
	res.HVPGFlops = l.gemms.Flops() / res.HVPSeconds / 1e9
	res.BLASGFlops = l.gemms.Flops() / res.BLASSeconds / 1e9
	res.HVPOverBLAS = res.HVPGFlops / res.BLASGFlops
	res.Probe = HVPProbe{Batch: l.o.ProbeBatch.Len(), HVPSeconds: median(l.tp)}
	res.Probe.HVPGFlops = l.pgemms.Flops() / res.Probe.HVPSeconds / 1e9
	res.Probe.BLASGFlops = l.pgemms.Flops() / median(l.tpb) / 1e9
	res.Probe.HVPOverBLAS = res.Probe.HVPGFlops / res.Probe.BLASGFlops
	return res
}

// WriteText prints res as `hessmon bench hvp` does without --json.
func (res HVPResult) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("%s, %d params, batch %d (medians of %d)\n", res.Model, res.Params, res.Batch, res.Reps)
	ew.printf("  BLAS                %s, GOMAXPROCS %d\n", res.BLAS, res.GOMAXPROCS)
	ew.printf("  gradient            %8.2f ms\n", res.GradSeconds*1e3)
	ew.printf("  HVP (cached fwd)    %8.2f ms   %.2f× gradient   %.1f GFLOP/s\n", res.HVPSeconds*1e3, res.HVPOverGrad, res.HVPGFlops)
	ew.printf("  HVP (with forward)  %8.2f ms   %.2f× gradient\n", res.HVPFull*1e3, res.FullOverGrad)
	ew.printf("  its GEMMs alone     %8.2f ms   %.1f GFLOP/s (HVP at %.0f%% of it)\n", res.BLASSeconds*1e3, res.BLASGFlops, 100*res.HVPOverBLAS)
	ew.printf("  probe HVP, batch %-3d %7.2f ms   %.1f GFLOP/s (%.0f%% of its GEMMs alone)\n", res.Probe.Batch, res.Probe.HVPSeconds*1e3, res.Probe.HVPGFlops, 100*res.Probe.HVPOverBLAS)
	if t := res.Torch; t != nil {
		ew.printf("  torch %s (%d threads), |Hv − hessmon's| / |Hv| = %.1e\n", t.Version, t.Threads, t.HVRelDiff)
		ew.printf("    double backward, retained graph  %8.2f ms   hessmon HVP %.2f× it\n", t.HVPSeconds*1e3, t.HVPRatio)
		ew.printf("    double backward, fresh forward   %8.2f ms   hessmon HVP %.2f×, with forward %.2f× it\n", t.HVPFullSeconds*1e3, t.FreshRatio, t.FullRatio)
		ew.printf("    autograd.functional.hvp          %8.2f ms\n", t.FunctionalHVP*1e3)
	}
	if res.Float32 != nil {
		res.Float32.writeText(ew, res.Batch)
	}
	return ew.err
}

// errWriter keeps the first write error so that a report prints in
// straight lines and reports it once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

// runTorch exports the model, batch, v and hessmon's H·v and times torch's
// double-backward HVP on them with the reference script.
func runTorch(ctx context.Context, t TorchOptions, dtype string, net *trainer.Network, b trainer.Batch, v, hv []float64, reps int) (*Torch, error) {
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
	cmd := exec.CommandContext(ctx, t.Python, t.Script, "--in", path, "--reps", strconv.Itoa(reps), "--threads", strconv.Itoa(t.Threads), "--dtype", dtype)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("bench hvp --vs-torch: %s %s: %w: %s (Debian: apt-get install python3-torch; --python, --torch-script)", t.Python, t.Script, err, strings.TrimSpace(stderr.String()))
	}
	var res Torch
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("bench hvp --vs-torch: reading %s's output: %w", t.Script, err)
	}
	return &res, nil
}
