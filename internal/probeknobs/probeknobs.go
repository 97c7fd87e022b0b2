// Package probeknobs holds the monitor's benchmark-only estimator knobs.
// Being internal, it keeps them out of the public monitor.Config: only
// hessmon's own benchmarks (hessmon bench probe) can set them, through
// monitor.Config.WithKnobs.
package probeknobs

// Knobs switch the monitor's probe back to round 1's estimator
// configuration, to measure what the defaults save.
type Knobs struct {
	// SeparateESD runs the ESD's Lanczos apart from the eigen solve; by
	// default the eigen solve starts from the ESD's Krylov basis and its
	// products.
	SeparateESD bool
	// WarmKrylovSchur warm-starts the eigen solve with round 1's
	// Krylov–Schur instead of the subspace refinement.
	WarmKrylovSchur bool
	// ProbeNice, when > 0, runs asynchronous probes on a thread of this
	// nice value (Linux), as rounds 1 and 2 did with 19; by default they
	// run at normal priority and the budget paces them.
	ProbeNice int
}
