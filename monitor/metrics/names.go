// Package metrics exports hessmon snapshots as Prometheus metrics.
//
// The metric and label names are constants here so that the Grafana
// dashboards and alert rules are generated from the same strings the exporter
// uses: a renamed metric cannot silently break a panel.
package metrics

import "github.com/hessmon/hessmon/snapshot"

// Metric names. Gauges describe the latest snapshot of each run.
const (
	TopEigenvalue         = "hessian_top_eigenvalue"          // {run,rank}
	EigenvalueResidual    = "hessian_eigenvalue_residual"     // {run,rank}
	Trace                 = "hessian_trace"                   // {run}
	TraceStdErr           = "hessian_trace_stderr"            // {run}
	BlockTrace            = "hessian_block_trace"             // {run,block}
	ESDCumulative         = "hessian_esd_cumulative"          // {run,le}
	SharpnessRatio        = "hessian_sharpness_ratio"         // {run}
	SharpnessThreshold    = "hessian_sharpness_threshold"     // {run}
	Step                  = "hessian_step"                    // {run}
	ProbeHVPs             = "hessian_probe_hvps"              // {run}: HVPs spent by the last probe
	MinEigenvalue         = "hessian_min_eigenvalue"          // {run}: λmin
	MinEigenvalueResidual = "hessian_min_eigenvalue_residual" // {run}
	// NegativeCurvature is |λmin|/λ1 when λmin < 0, else 0; above 1 the
	// Hessian curves down more steeply than up (a diverging run).
	NegativeCurvature = "hessian_negative_curvature_ratio" // {run}
	// ESDNegativeMass is the share of the spectral density below zero
	// (nodes below −0.1% of the largest |node|).
	ESDNegativeMass = "hessian_esd_negative_mass" // {run}
	// PreconditionedTopEigenvalue is λ1(P⁻¹H) of an adaptive optimiser
	// (Adam's diagonal P): the sharpness its threshold refers to.
	PreconditionedTopEigenvalue = "hessian_preconditioned_top_eigenvalue" // {run}
	// EigenvectorBlockMass is ‖v1[block]‖² of the top eigenvector.
	EigenvectorBlockMass = "hessian_eigenvector_block_mass" // {run,block}
	// BlockTopEigenvalue is λ1 of the diagonal block H_bb (layer-wise
	// sharpness), when probed.
	BlockTopEigenvalue = "hessian_block_top_eigenvalue" // {run,block}

	TrainingLoss = "hessmon_training_loss"          // {run}
	TrainingLR   = "hessmon_training_learning_rate" // {run}

	ProbeDuration = "hessmon_probe_duration_seconds" // histogram {run}
	HVPTotal      = "hessmon_hvp_total"              // counter {run}
	ProbeFailures = "hessmon_probe_failures_total"   // counter {run,reason}
	ProbesTotal   = "hessmon_probes_total"           // counter {run}
)

// Label names.
const (
	LabelRun    = "run"
	LabelRank   = "rank"
	LabelBlock  = "block"
	LabelLE     = "le"
	LabelReason = "reason"
)

// Failure reasons, the values of the reason label, are snapshot.Failures():
// the exporter starts each run's failure counter at zero for all of them, so
// that failure panels and alerts have a series before the first failure.
const (
	ReasonNaN     = string(snapshot.FailNaN)
	ReasonPanic   = string(snapshot.FailPanic)
	ReasonTimeout = string(snapshot.FailTimeout)
	ReasonBudget  = string(snapshot.FailBudget)
	ReasonError   = string(snapshot.FailError)
)
