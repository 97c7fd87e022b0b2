package bench

import (
	"fmt"
	"io"

	"github.com/hessmon/hessmon/internal/storebench"
)

// StoreResult is the JSON of `hessmon bench store`.
type StoreResult struct {
	storebench.Result
	// ReadSeconds times each inspection command on the run, as a user
	// would type it.
	ReadSeconds map[string]float64 `json:"read_seconds"`
	ExportBytes int64              `json:"export_jsonl_bytes"`
	// Float32 is what resuming from float32-rounded eigenvectors costs
	// (a dense test matrix, at the monitor's tolerance and a tight one).
	Float32 []storebench.Float32Result `json:"warm_float32"`
	Dir     string                     `json:"dir,omitempty"`
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// WriteText prints out as `hessmon bench store` does without --json, the
// read times in the order of reads.
func (out StoreResult) WriteText(w io.Writer, reads []string) error {
	res := out.Result
	ew := &errWriter{w: w}
	p := ew.printf
	sync := "fsync per transaction"
	if !res.Sync {
		sync = "no fsync"
	}
	p("%d snapshots of %d bytes, warm state %.1f MB saved %d times (%s)\n", res.Snapshots, res.SnapshotBytes, float64(res.WarmBytes)/1e6, res.WarmWrites, sync)
	p("  file          %10s   %.2f× the bytes in use (%s)\n", mb(res.FileBytes), res.FileOverInUse, mb(res.InUseBytes))
	p("  snapshot write p50 %.2f ms, p99 %.2f ms (%.1f× p50), max %.1f ms\n", 1e3*res.SnapshotWriteP50, 1e3*res.SnapshotWriteP99, res.P99OverP50, 1e3*res.SnapshotWriteMax)
	if b := res.FsyncBaseline; b != nil {
		p("  bare commit system calls (the machine's floor) p50 %.2f ms, p99 %.2f ms (%.1f× p50)\n", 1e3*b.P50, 1e3*b.P99, b.P99OverP50)
	}
	p("  warm save      p50 %.1f ms, max %.1f ms\n", 1e3*res.WarmWriteP50, 1e3*res.WarmWriteMax)
	p("  reads:")
	for _, name := range reads {
		p(" %s %.2fs", name, out.ReadSeconds[name])
	}
	p("\n")
	for _, r := range out.Float32 {
		p("  warm start from float32 vectors (dense n=%d, top %d, drift %g, tol %g): %d HVPs, float64 %d, cold %d; λ error %.1e vs %.1e\n",
			r.N, r.K, r.Drift, r.Tol, r.Warm32HVPs, r.Warm64HVPs, r.ColdHVPs, r.Warm32Error, r.Warm64Error)
	}
	return ew.err
}
