// Package storebench measures the store at scale: it writes a long run of
// synthetic snapshots of a realistic size, with a warm state of a given
// model size saved at a monitor's rate, and reports the file's size
// against the bytes in use and the write latencies. `hessmon bench store`
// adds the read times of the CLI's inspection commands.
package storebench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// Config describes the synthetic run.
type Config struct {
	// Run is the run id (default "bench").
	Run string
	// Snapshots is the number of probes (default 10,000), Every the steps
	// between them (default 100).
	Snapshots int
	Every     int64
	// Params is the model size and TopK the eigenvectors in the warm
	// state: TopK·Params float64s plus trace probes (defaults 118,282, the
	// MNIST MLP 784-128-128-10, and 5).
	Params, TopK int
	// WarmEvery saves the warm state after the first probe, then every
	// WarmEvery probes, and after the last (the monitor's default rate:
	// 10). 1 saves it at every probe.
	WarmEvery int
	// NoSync skips fsync (not what a trainer does; for quick runs).
	NoSync bool
	// Baseline also times the bare system calls of a commit after each
	// snapshot write (see Baseline).
	Baseline bool
}

func (c Config) withDefaults() Config {
	if c.Run == "" {
		c.Run = "bench"
	}
	if c.Snapshots <= 0 {
		c.Snapshots = 10000
	}
	if c.Every <= 0 {
		c.Every = 100
	}
	if c.Params <= 0 {
		c.Params = 118282
	}
	if c.TopK <= 0 {
		c.TopK = 5
	}
	if c.WarmEvery <= 0 {
		c.WarmEvery = 10
	}
	return c
}

// Result is what Write measured. Latencies are in seconds.
type Result struct {
	Run              string  `json:"run"`
	Snapshots        int     `json:"snapshots"`
	Every            int64   `json:"every"`
	SnapshotBytes    int     `json:"snapshot_bytes"`
	WarmBytes        int     `json:"warm_bytes"`
	WarmWrites       int     `json:"warm_writes"`
	Sync             bool    `json:"fsync"`
	SnapshotWriteP50 float64 `json:"snapshot_write_p50_seconds"`
	SnapshotWriteP99 float64 `json:"snapshot_write_p99_seconds"`
	SnapshotWriteMax float64 `json:"snapshot_write_max_seconds"`
	P99OverP50       float64 `json:"snapshot_write_p99_over_p50"`
	WarmWriteP50     float64 `json:"warm_write_p50_seconds"`
	WarmWriteMax     float64 `json:"warm_write_max_seconds"`
	WriteSeconds     float64 `json:"write_seconds"`
	store.Stats              // file_bytes, bytes_in_use, …
	FileOverInUse    float64 `json:"file_over_in_use"`
	// FsyncBaseline is nil unless Config.Baseline.
	FsyncBaseline *Baseline `json:"fsync_baseline,omitempty"`
}

// Write creates a store at path (which must not hold one) and writes the
// synthetic run into it.
func Write(ctx context.Context, path string, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	st, err := store.Open(path, store.Options{NoSync: cfg.NoSync})
	if err != nil {
		return Result{}, err
	}
	defer st.Close()
	if runs, err := st.Runs(); err != nil || len(runs) > 0 {
		return Result{}, fmt.Errorf("storebench: %s already holds runs (%v)", path, err)
	}
	start := time.Unix(1_760_000_000, 0).UTC()
	if err := st.PutRun(snapshot.Run{ID: cfg.Run, Model: fmt.Sprintf("synthetic, %d params", cfg.Params), Optimizer: "sgd", Started: start}); err != nil {
		return Result{}, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	warm := make([]byte, 8*cfg.TopK*cfg.Params+3700) // vectors + trace probes' state
	for i := range warm {
		warm[i] = byte(rng.Uint32())
	}
	res := Result{Run: cfg.Run, Snapshots: cfg.Snapshots, Every: cfg.Every, WarmBytes: len(warm), Sync: !cfg.NoSync}
	var base *baseline
	if cfg.Baseline {
		if base, err = newBaseline(filepath.Dir(path)); err != nil {
			return Result{}, err
		}
		defer base.close()
	}
	snapLat := make([]float64, 0, cfg.Snapshots)
	var warmLat []float64
	t0 := time.Now()
	for i := range cfg.Snapshots {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		sn := Snapshot(cfg.Run, int64(i+1)*cfg.Every, start, rng)
		if i == 0 {
			b, _ := store.EncodeSnapshot(sn)
			res.SnapshotBytes = len(b)
		}
		t := time.Now()
		if err := st.PutSnapshot(sn); err != nil {
			return res, err
		}
		snapLat = append(snapLat, time.Since(t).Seconds())
		if base != nil {
			if err := base.round(); err != nil {
				return res, err
			}
		}
		if i == 0 || (i+1)%cfg.WarmEvery == 0 || i == cfg.Snapshots-1 {
			// A new state each time: the estimators move every vector.
			for j := range 64 {
				warm[rng.IntN(len(warm))] ^= byte(j + 1)
			}
			t := time.Now()
			if err := st.PutWarm(cfg.Run, warm); err != nil {
				return res, err
			}
			warmLat = append(warmLat, time.Since(t).Seconds())
		}
	}
	res.WriteSeconds = time.Since(t0).Seconds()
	res.WarmWrites = len(warmLat)
	res.SnapshotWriteP50, res.SnapshotWriteP99 = quantile(snapLat, 0.5), quantile(snapLat, 0.99)
	res.SnapshotWriteMax = slices.Max(snapLat)
	res.P99OverP50 = res.SnapshotWriteP99 / res.SnapshotWriteP50
	res.WarmWriteP50, res.WarmWriteMax = quantile(warmLat, 0.5), slices.Max(warmLat)
	if res.Stats, err = st.Stats(); err != nil {
		return res, err
	}
	res.FileOverInUse = float64(res.FileBytes) / float64(res.InUseBytes)
	if base != nil {
		b := &Baseline{P50: quantile(base.lat, 0.5), P99: quantile(base.lat, 0.99)}
		b.P99OverP50 = b.P99 / b.P50
		res.FsyncBaseline = b
	}
	return res, st.Close()
}

func quantile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(p*float64(len(s))))-1)]
}

// blocks are the parameter tensors of the MNIST MLP 784-128-128-10.
var blocks = []string{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}

// Snapshot is a synthetic probe the size of the monitor's default probe of
// an MLP: top-5 eigenpairs (no vectors), a trace with six block traces and
// a 1×30 ESD; about 900 bytes stored.
func Snapshot(run string, step int64, start time.Time, rng *rand.Rand) snapshot.Snapshot {
	l1 := 3 + 2*math.Sin(float64(step)/5000)
	s := snapshot.Snapshot{
		Run: run, Step: step, Time: start.Add(time.Duration(step) * 40 * time.Millisecond),
		Loss: 2.3 * math.Exp(-float64(step)/20000), LearningRate: 0.05, Optimizer: "sgd", Beta1: 0.9,
		SharpnessThreshold: 76, SharpnessRatio: l1 / 76,
		HVPs: 80 + rng.IntN(40), Seconds: 0.5 + rng.Float64()/2, Warm: step%1000 != 0,
	}
	for i := range 5 {
		s.Eigenvalues = append(s.Eigenvalues, l1/float64(i+1))
		s.Residuals = append(s.Residuals, 1e-5*rng.Float64())
	}
	s.Trace = &snapshot.Trace{Value: 17 + rng.NormFloat64(), StdErr: 1.3, Probes: 24, Method: "hutch++"}
	for _, b := range blocks {
		s.Trace.Blocks = append(s.Trace.Blocks, snapshot.BlockTrace{Name: b, Value: 3 * rng.Float64(), StdErr: 0.2 * rng.Float64()})
	}
	e := &snapshot.ESD{Probes: 1, Steps: 30, Sigma2: 1e-5}
	for range 30 {
		e.Nodes = append(e.Nodes, l1*(2*rng.Float64()-0.2))
		e.Weights = append(e.Weights, rng.Float64()/15)
	}
	s.ESD = e
	return s
}

// Baseline is the write latency the machine itself allows, measured in
// the same loop as the store's writes so that both see the same load: one
// round per snapshot of what a bbolt commit does at the system-call level
// (write two 16 KiB pages and fdatasync, write a meta page and fdatasync
// again) on a file next to the store. Its p99/p50 is the floor under the
// store's.
type Baseline struct {
	P50        float64 `json:"p50_seconds"`
	P99        float64 `json:"p99_seconds"`
	P99OverP50 float64 `json:"p99_over_p50"`
}

type baseline struct {
	f    *os.File
	page []byte
	lat  []float64
}

func newBaseline(dir string) (*baseline, error) {
	f, err := os.CreateTemp(dir, "fsync-baseline-")
	if err != nil {
		return nil, err
	}
	b := &baseline{f: f, page: make([]byte, 32<<10)}
	if _, err := f.WriteAt(b.page, 0); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *baseline) round() error {
	b.page[len(b.lat)%len(b.page)]++
	t := time.Now()
	if _, err := b.f.WriteAt(b.page, 16<<10); err != nil {
		return err
	}
	if err := fdatasync(b.f); err != nil {
		return err
	}
	if _, err := b.f.WriteAt(b.page[:4096], 0); err != nil {
		return err
	}
	if err := fdatasync(b.f); err != nil {
		return err
	}
	b.lat = append(b.lat, time.Since(t).Seconds())
	return nil
}

func (b *baseline) close() {
	_ = b.f.Close()
	_ = os.Remove(b.f.Name())
}
