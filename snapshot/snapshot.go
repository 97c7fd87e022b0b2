// Package snapshot defines the value that every hessmon probe produces.
//
// It is a leaf package on purpose: the store, the Prometheus exporter, the
// CLI and the dashboards all speak Snapshot without importing the monitor or
// the estimators.
package snapshot

import (
	"math"
	"time"
)

// Snapshot is one probe of the loss Hessian at one training step. Every
// estimate carries its own certificate: eigenvalues their residual norms, the
// trace its standard error and probe count, the ESD its probe count, Lanczos
// steps and kernel width.
type Snapshot struct {
	Run  string    `json:"run"`
	Step int64     `json:"step"`
	Time time.Time `json:"time"`

	Loss         float64   `json:"loss"`
	LearningRate float64   `json:"learning_rate"`
	Optimizer    Optimizer `json:"optimizer,omitempty"`
	Beta1        float64   `json:"beta1,omitempty"` // Adam's β1 (or SGD momentum)

	// SharpnessThreshold is the edge-of-stability level for λ1: 2/η for SGD,
	// (2+2β1)/(η(1−β1)) for Adam. SharpnessRatio is λ1 / threshold.
	SharpnessThreshold float64 `json:"sharpness_threshold,omitempty"`
	SharpnessRatio     float64 `json:"sharpness_ratio,omitempty"`

	// Eigenvalues are sorted in the order requested (algebraic or magnitude),
	// Residuals[i] = ‖H vᵢ − λᵢ vᵢ‖ with ‖vᵢ‖ = 1.
	Eigenvalues  []float64   `json:"eigenvalues,omitempty"`
	Residuals    []float64   `json:"residuals,omitempty"`
	Eigenvectors [][]float64 `json:"eigenvectors,omitempty"`

	// LambdaMin is the smallest eigenvalue with its residual, from the same
	// Krylov space as the top-k: the other end of the spectrum, where a
	// diverging run shows its negative curvature.
	LambdaMin *Eigenpair `json:"lambda_min,omitempty"`
	// PreconditionedLambda1 is λ1(P⁻¹H) for an adaptive optimiser with
	// diagonal preconditioner P (Adam's), the sharpness its
	// edge-of-stability threshold refers to (Cohen et al. 2022).
	PreconditionedLambda1 *Eigenpair `json:"preconditioned_lambda1,omitempty"`
	// BlockMass is ‖v1[b]‖² for each parameter block b: how the top
	// eigenvector's mass splits over the layers (it sums to 1 over a
	// partition).
	BlockMass []BlockValue `json:"block_mass,omitempty"`
	// BlockLambda1 is λ1 of each diagonal block H_bb (layer-wise
	// sharpness), with residuals; probed every few probes, when asked for.
	BlockLambda1 []BlockValue `json:"block_lambda1,omitempty"`

	Trace *Trace `json:"trace,omitempty"`
	ESD   *ESD   `json:"esd,omitempty"`

	HVPs    int     `json:"hvps"`
	Seconds float64 `json:"seconds"`
	Warm    bool    `json:"warm"`

	// Kind says whether this was a light probe (λ1, λmin and, for Adam,
	// λ1(P⁻¹H)) or a full one; empty in stores written before light probes
	// existed, which held full probes only (see IsLight).
	Kind Kind `json:"kind,omitempty"`
	// Reason says why the probe was taken: its schedule, the budget, or the
	// trigger that brought a full probe forward.
	Reason Reason `json:"reason,omitempty"`
	// Precision is the floating-point precision of the HVPs ("float64" or
	// "float32"); the estimators' arithmetic is float64 either way. Empty
	// means float64 (older stores).
	Precision Precision `json:"precision,omitempty"`
	// PeakBytes is the most memory the probe's estimators held in
	// n-vectors, in bytes (0: not measured).
	PeakBytes int64 `json:"peak_bytes,omitempty"`
	// Failure is empty for a good probe; otherwise a short reason
	// (one of Failures()) and Detail says more.
	Failure Failure `json:"failure,omitempty"`
	Detail  string  `json:"detail,omitempty"`
}

// Optimizer names the optimiser of a run. Its edge-of-stability threshold
// depends on it, so a typo must not silently pick the SGD formula: use the
// constants.
type Optimizer string

// Optimisers hessmon knows the sharpness threshold of. Any other name is
// kept and shown but gets no threshold.
const (
	SGD   Optimizer = "sgd"  // gradient descent, with or without heavy-ball momentum
	Adam  Optimizer = "adam" // Adam and AdamW
	AdamW Optimizer = "adamw"
)

// Adaptive reports whether o preconditions its steps (Adam, AdamW).
func (o Optimizer) Adaptive() bool { return o == Adam || o == AdamW }

// Failure is why a probe failed. The values are label values of
// hessmon_probe_failures_total, so they are part of the metrics contract.
type Failure string

// Failure reasons.
const (
	FailNaN     Failure = "nan"     // a product or estimate was NaN or infinite
	FailPanic   Failure = "panic"   // the operator or an estimator panicked
	FailTimeout Failure = "timeout" // the probe outlasted its wall-time budget
	FailBudget  Failure = "budget"  // the probe ran out of HVPs before its certificates held
	FailError   Failure = "error"   // the operator returned an error
)

// Failures lists every failure reason, in a fixed order.
func Failures() []Failure {
	return []Failure{FailNaN, FailPanic, FailTimeout, FailBudget, FailError}
}

// Kind is the kind of a probe.
type Kind string

// Probe kinds.
const (
	// KindFull is every configured estimate: top-k, λmin, trace with its
	// blocks, ESD, block quantities.
	KindFull Kind = "full"
	// KindLight is λ1 and λmin with residuals (and λ1(P⁻¹H) for adaptive
	// optimisers), tracked warm in a few HVPs.
	KindLight Kind = "light"
)

// IsLight reports whether s is a light probe. Snapshots without a kind
// (older stores) are full probes.
func (s *Snapshot) IsLight() bool { return s.Kind == KindLight }

// Reason is why a probe was taken. The values are label values of the
// exporter, so they are part of the metrics contract.
type Reason string

// Probe reasons.
const (
	// ReasonScheduled is a probe of a fixed schedule (synchronous mode, or
	// a light probe at a due step).
	ReasonScheduled Reason = "scheduled"
	// ReasonBudget is a full probe that the overhead budget paid for.
	ReasonBudget Reason = "budget"
	// ReasonThreshold: λ1 over its edge-of-stability threshold crossed 0.8
	// or 1 since the last full probe.
	ReasonThreshold Reason = "threshold"
	// ReasonJump: λ1 moved by more than 25% since the last full probe.
	ReasonJump Reason = "jump"
	// ReasonNegativeCurvature: |λmin|/λ1 exceeded 0.1.
	ReasonNegativeCurvature Reason = "negative-curvature"
	// ReasonFailure: the previous light probe failed (NaN, Inf).
	ReasonFailure Reason = "failure"
	// ReasonFinal is the full probe Close may take at the end of a run.
	ReasonFinal Reason = "final"
)

// Reasons lists every probe reason, in a fixed order.
func Reasons() []Reason {
	return []Reason{ReasonScheduled, ReasonBudget, ReasonThreshold, ReasonJump, ReasonNegativeCurvature, ReasonFailure, ReasonFinal}
}

// Trigger reports whether r is an event trigger (rather than a schedule).
func (r Reason) Trigger() bool {
	switch r {
	case ReasonThreshold, ReasonJump, ReasonNegativeCurvature, ReasonFailure:
		return true
	}
	return false
}

// Precision is the floating-point precision of a probe's HVPs.
type Precision string

// Precisions.
const (
	Float64 Precision = "float64"
	Float32 Precision = "float32"
)

// Eigenpair is an eigenvalue with its certificate ‖Hv−λv‖ (‖v‖ = 1).
type Eigenpair struct {
	Value    float64 `json:"value"`
	Residual float64 `json:"residual"`
}

// BlockValue is a per-block quantity: the name of a parameter block, its
// value and, where it has one, its certificate (a residual; 0 if none).
type BlockValue struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Residual float64 `json:"residual,omitempty"`
}

// Trace is a stochastic trace estimate with its certificate.
type Trace struct {
	Value  float64      `json:"value"`
	StdErr float64      `json:"stderr"`
	Probes int          `json:"probes"`
	Method string       `json:"method"` // "hutchinson", "hutch++", "deltashift"
	Blocks []BlockTrace `json:"blocks,omitempty"`
}

// BlockTrace is tr(H_bb) for one parameter tensor.
type BlockTrace struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	StdErr float64 `json:"stderr"`
}

// ESD is a stochastic Lanczos quadrature of the spectral density: Probes
// runs of Steps Lanczos steps, flattened probe-major. Weights sum to 1.
type ESD struct {
	Nodes   []float64 `json:"nodes"`
	Weights []float64 `json:"weights"`
	Probes  int       `json:"probes"`
	Steps   int       `json:"steps"`
	// Sigma2 is the Gaussian kernel variance used to turn nodes into a density.
	Sigma2 float64 `json:"sigma2"`
}

// Lambda1 returns the first eigenvalue, or NaN-free zero and false when the
// snapshot has none.
func (s *Snapshot) Lambda1() (float64, bool) {
	if len(s.Eigenvalues) == 0 {
		return 0, false
	}
	return s.Eigenvalues[0], true
}

// Failed reports whether the probe failed.
func (s *Snapshot) Failed() bool { return s.Failure != "" }

// Run describes one training run kept in a store.
type Run struct {
	ID        string            `json:"id"`
	Model     string            `json:"model"`
	Optimizer Optimizer         `json:"optimizer,omitempty"`
	Started   time.Time         `json:"started"`
	Config    map[string]string `json:"config,omitempty"`
	// Resumes is the run's lineage: each time it was resumed from a
	// checkpoint, and at which step, oldest first.
	Resumes []Resume `json:"resumes,omitempty"`
}

// Resume records one resumption of a run: training restarted after step
// AtStep (from its checkpoint there) at Time.
type Resume struct {
	AtStep int64     `json:"at_step"`
	Time   time.Time `json:"time"`
}

// NegativeMass is the share of the quadrature's weight at nodes below
// −tol·max|node|: the spectral density's negative curvature. The spike at
// zero lands a hair either side of it, which tol keeps out (hessmon uses
// 1e-3). It is NaN for an ESD without positive finite weight.
func (e *ESD) NegativeMass(tol float64) float64 {
	var scale, total, neg float64
	n := min(len(e.Nodes), len(e.Weights))
	for i := range n {
		if x := e.Nodes[i]; e.Weights[i] > 0 && !math.IsNaN(x) {
			scale = math.Max(scale, math.Abs(x))
		}
	}
	for i := range n {
		w, x := e.Weights[i], e.Nodes[i]
		if !(w > 0) || math.IsNaN(x) || math.IsInf(w, 0) {
			continue
		}
		total += w
		if x < -tol*scale {
			neg += w
		}
	}
	if !(total > 0) {
		return math.NaN()
	}
	return neg / total
}

// NegativeCurvatureRatio is |λmin|/λ1 when λmin < 0 (0 otherwise): above 1
// the Hessian curves down more steeply than it curves up, as in a diverging
// run. It reports false without both estimates.
func (s *Snapshot) NegativeCurvatureRatio() (float64, bool) {
	l1, ok := s.Lambda1()
	if !ok || s.LambdaMin == nil || l1 == 0 {
		return 0, false
	}
	return math.Max(0, -s.LambdaMin.Value) / math.Abs(l1), true
}

// SharpnessLambda is the λ1 that the sharpness threshold refers to: the
// preconditioned one for adaptive optimisers when it was probed, else λ1.
func (s *Snapshot) SharpnessLambda() (float64, bool) {
	if s.Optimizer.Adaptive() && s.PreconditionedLambda1 != nil {
		return s.PreconditionedLambda1.Value, true
	}
	return s.Lambda1()
}
