// Package snapshot defines the value that every hessmon probe produces.
//
// It is a leaf package on purpose: the store, the Prometheus exporter, the
// CLI and the dashboards all speak Snapshot without importing the monitor or
// the estimators.
package snapshot

import "time"

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

	Trace *Trace `json:"trace,omitempty"`
	ESD   *ESD   `json:"esd,omitempty"`

	HVPs    int     `json:"hvps"`
	Seconds float64 `json:"seconds"`
	Warm    bool    `json:"warm"`
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
}
