// Package krylov carries what hessmon's own pipeline hands from one
// estimator to the next: a Krylov space whose products are already paid
// for (the ESD's Lanczos basis), and the benchmark-only choice of round 1's
// warm start. It is internal, so these knobs are no public API: a user
// sets estimators.EigenOptions.Start to nil (the default) and gets the
// documented solve; monitor.Analyze and the benchmarks set it.
package krylov

// Start seeds an eigen solve.
type Start struct {
	// Basis holds directions whose exact products another estimator has
	// already paid for (Products[i] = H·Basis[i]), typically the ESD's
	// Lanczos basis: the solve starts from them at no HVP cost. A random
	// Krylov basis of 30 steps already holds good approximations of the
	// extreme eigenvectors, both ends.
	Basis, Products [][]float64
	// Orthonormal promises that Basis is orthonormal (to rounding), as one
	// ESD probe's Lanczos basis is: it is then taken as it is.
	Orthonormal bool
	// NoRefine warm-starts with Krylov–Schur from a combination of the
	// previous eigenvectors (round 1's method, kept to measure what the
	// refinement saves) instead of the subspace refinement. Basis is then
	// ignored.
	NoRefine bool
}
