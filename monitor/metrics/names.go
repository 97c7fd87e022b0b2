// Package metrics exports hessmon snapshots as Prometheus metrics.
//
// The metric and label names are constants here so that the Grafana
// dashboards and alert rules are generated from the same strings the exporter
// uses: a renamed metric cannot silently break a panel.
package metrics

import "github.com/hessmon/hessmon/snapshot"

// Metric names. Gauges describe the latest snapshot of each run. Every
// probe, light or full, updates λ1 (rank 1 of TopEigenvalue and
// EigenvalueResidual), λmin, the sharpness ratio and threshold, λ1(P⁻¹H),
// Step and ProbeHVPs. The full-only gauges (ranks 2..k, the trace and its
// blocks, the ESD, block mass and block λ1) keep the last full probe's
// values, taken at FullProbeStep.
const (
	TopEigenvalue         = "hessian_top_eigenvalue"          // {run,rank}
	EigenvalueResidual    = "hessian_eigenvalue_residual"     // {run,rank}
	Trace                 = "hessian_trace"                   // {run}
	TraceStdErr           = "hessian_trace_stderr"            // {run}
	BlockTrace            = "hessian_block_trace"             // {run,block}
	ESDCumulative         = "hessian_esd_cumulative"          // {run,le}
	SharpnessRatio        = "hessian_sharpness_ratio"         // {run}
	SharpnessThreshold    = "hessian_sharpness_threshold"     // {run}
	Step                  = "hessian_step"                    // {run}: step of the latest probe, light or full
	FullProbeStep         = "hessian_full_probe_step"         // {run}: step of the latest full probe
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
	ProbesTotal   = "hessmon_probes_total"           // counter {run}: all probes, as before light probes
	// ProbesByKind counts the same probes by kind (light, full) and reason
	// (scheduled, budget, a trigger, final); sum by run equals ProbesTotal.
	ProbesByKind = "hessmon_probes_by_kind_total" // counter {run,kind,reason}
)

// Label names.
const (
	LabelRun    = "run"
	LabelRank   = "rank"
	LabelBlock  = "block"
	LabelLE     = "le"
	LabelReason = "reason" // a failure reason, or a probe reason on ProbesByKind
	LabelKind   = "kind"
)

// Probe kinds and reasons, the values of the kind and reason labels of
// ProbesByKind, are snapshot.KindLight, snapshot.KindFull and
// snapshot.Reasons(): the exporter starts every combination at zero. A
// snapshot without a kind (an older store) counts as full, one without a
// reason as scheduled.
const (
	KindLight = string(snapshot.KindLight)
	KindFull  = string(snapshot.KindFull)
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
