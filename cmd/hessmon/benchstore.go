package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hessmon/hessmon/internal/bench"
	"github.com/hessmon/hessmon/internal/storebench"
)

// storeRead is an inspection command that bench store times.
type storeRead struct {
	name string
	args []string
}

// storeReads are the commands bench store times, by name.
func storeReads(db, dir string, step int64) []storeRead {
	return []storeRead{
		{"runs", []string{"runs", "--db", db}},
		{"show", []string{"show", "--db", db}},
		{"show_step", []string{"show", "--db", db, "--step", strconv.FormatInt(step, 10)}},
		{"export_csv", []string{"export", "--db", db, "--format", "csv", "--out", filepath.Join(dir, "run.csv")}},
		{"export_jsonl", []string{"export", "--db", db, "--format", "jsonl", "--out", filepath.Join(dir, "run.jsonl")}},
		{"plot_eigen", []string{"plot", "--db", db, "--kind", "eigen", "--out", filepath.Join(dir, "eigen.png")}},
		{"plot_trace", []string{"plot", "--db", db, "--kind", "trace", "--out", filepath.Join(dir, "trace.png")}},
		{"compact", []string{"compact", "--db", db, "--out", filepath.Join(dir, "compact.db")}},
	}
}

func benchStore(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "bench store", "write a long synthetic run into a fresh store, as a trainer would (one fsynced "+
		"transaction per snapshot; the warm state saved after the first probe, every --warm-every probes and at the end), "+
		"then time the inspection commands on it. Reports file bytes against bytes in use, the write latency per "+
		"snapshot (p50, p99) and per warm save, and the seconds of runs, show, export, plot and compact; and what "+
		"resuming from float32-rounded eigenvectors costs (HVPs, eigenvalue error) on a dense test matrix.",
		"hessmon bench store --json --snapshots 10000")
	n := fs.Int("snapshots", 10000, "probes in the run")
	params := fs.Int("params", 118282, "model parameters: the warm state holds --k eigenvectors of this length (the default is the MNIST MLP 784-128-128-10)")
	k := fs.Int("k", 5, "eigenvectors in the warm state")
	warmEvery := fs.Int("warm-every", 10, "save the warm state every N probes (the monitor's default WarmEvery; 1: every probe)")
	noSync := fs.Bool("nosync", false, "skip fsync (quicker, not what a trainer does)")
	baseline := fs.Bool("baseline", true, "also time the bare write+fdatasync system calls of a commit after each snapshot, the machine's own latency floor (ignored with --nosync)")
	dir := fs.String("dir", "", "directory for the store and the exported files, kept afterwards (default: a temporary one, removed)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *params <= 0 || *k <= 0 || *warmEvery <= 0 {
		return usageErr("--snapshots, --params, --k and --warm-every must be positive")
	}
	d, cleanup, err := benchDir(*dir)
	if err != nil {
		return err
	}
	defer cleanup()
	db := filepath.Join(d, "bench.db")
	if _, err := os.Stat(db); err == nil {
		return fmt.Errorf("%s exists; give bench store an empty --dir", db)
	}
	res, err := storebench.Write(ctx, db, storebench.Config{
		Snapshots: *n, Params: *params, TopK: *k, WarmEvery: *warmEvery, NoSync: *noSync, Baseline: *baseline && !*noSync,
	})
	if err != nil {
		return err
	}
	out := bench.StoreResult{Result: res, ReadSeconds: map[string]float64{}}
	if *dir != "" {
		out.Dir = d
	}
	mid := int64(res.Snapshots/2+1) * res.Every
	if err := timeReads(ctx, out.ReadSeconds, storeReads(db, d, mid)); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Join(d, "run.jsonl")); err == nil {
		out.ExportBytes = fi.Size()
	}
	for _, c := range []storebench.Float32Config{{Drift: 1e-3}, {Drift: -1, Tol: 1e-10}} {
		r, err := storebench.Float32Resume(ctx, c)
		if err != nil {
			return err
		}
		out.Float32 = append(out.Float32, r)
	}
	if *asJSON {
		return writeJSON(e.stdout, out)
	}
	var names []string
	for _, c := range storeReads(db, d, mid) {
		names = append(names, c.name)
	}
	return out.WriteText(e.stdout, names)
}

// benchDir returns dir, created if missing, or a temporary directory that
// cleanup removes.
func benchDir(dir string) (d string, cleanup func(), err error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o755)
	}
	tmp, err := os.MkdirTemp("", "hessmon-bench-store-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { os.RemoveAll(tmp) }, nil
}

// timeReads runs each inspection command as a user would type it and
// records its wall time by name.
func timeReads(ctx context.Context, dst map[string]float64, reads []storeRead) error {
	for _, c := range reads {
		if err := ctx.Err(); err != nil {
			return err
		}
		var stderr bytes.Buffer
		t := time.Now()
		if code := run(ctx, c.args, io.Discard, &stderr); code != 0 {
			return fmt.Errorf("bench store: %v: exit %d: %s", c.args, code, stderr.String())
		}
		dst[c.name] = time.Since(t).Seconds()
	}
	return nil
}
