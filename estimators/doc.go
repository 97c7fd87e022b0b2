// Package estimators computes curvature summaries of a symmetric operator
// (typically a loss Hessian seen through Hessian-vector products): the top-k
// eigenpairs, the trace and the eigenvalue spectral density (ESD).
//
// Every estimate carries its own certificate, so that a caller can tell how
// right it is without knowing the truth:
//
//   - eigenpairs carry residual norms ‖Hv−λv‖; for a symmetric operator an
//     eigenvalue lies within that distance of every returned value;
//   - traces carry a standard error, the probe count and the method used;
//   - the ESD carries its quadrature (nodes and weights), probe count and
//     Lanczos steps, and moments come with a standard error over probes.
//
// Every estimator takes an optional warm state from a previous call and
// returns the updated one, so that a monitor probing a slowly changing
// Hessian pays little for each new snapshot: eigen solves restart from the
// previous eigenvectors, traces are tracked across calls (DeltaShift-style)
// and the ESD reuses its probe vectors (common random numbers). The bundled
// state (Warm) serialises to bytes for persistence.
//
// The package only knows hvp.Operator; it never sees a model. All randomness
// comes from seeded PCG streams, so results are reproducible.
package estimators
