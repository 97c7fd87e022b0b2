package dashboards

import (
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/hessmon/hessmon/monitor/metrics"
)

// Curvature dashboard identity.
const (
	CurvatureUID   = "hessmon-curvature"
	curvatureTitle = "hessmon / Training curvature"
)

// varWindow is the look-back window for counters and the probe-duration
// histogram. Probes are sparse events (every N training steps), so a fixed,
// user-chosen window reads better than Grafana's $__rate_interval, which
// shrinks with the scrape interval and shows gaps between probes.
const varWindow = "probe_window"

var windowChoices = []string{"1m", "5m", "15m", "1h"}

const defaultWindow = "5m"

func windowVariable() *dashboard.IntervalVariableBuilder {
	opts := make([]dashboard.VariableOption, 0, len(windowChoices))
	for _, w := range windowChoices {
		opts = append(opts, dashboard.VariableOption{
			Selected: cog.ToPtr(w == defaultWindow),
			Text:     dashboard.StringOrArrayOfString{String: cog.ToPtr(w)},
			Value:    dashboard.StringOrArrayOfString{String: cog.ToPtr(w)},
		})
	}
	q := strings.Join(windowChoices, ",")
	return dashboard.NewIntervalVariableBuilder(varWindow).
		Label("Probe window").
		Description("Look-back window for probe counters and the probe-duration histogram.").
		Values(dashboard.StringOrMap{String: cog.ToPtr(q)}).
		Current(dashboard.VariableOption{
			Selected: cog.ToPtr(true),
			Text:     dashboard.StringOrArrayOfString{String: cog.ToPtr(defaultWindow)},
			Value:    dashboard.StringOrArrayOfString{String: cog.ToPtr(defaultWindow)},
		}).
		Options(opts)
}

// curvatureDashboard is the single-run view: spectrum edge, trace, density,
// per-layer traces, training signals and what the probes cost. Rows and
// panels take ids in display order, so the stages run in that order.
func curvatureDashboard() (dashboard.Dashboard, error) {
	ids := &panelIDs{}
	d := newDashboard(CurvatureUID, curvatureTitle,
		"Live Hessian curvature of one training run, from hessmon's Prometheus exporter.").
		WithVariable(runVariable(false)).
		WithVariable(windowVariable())
	for _, row := range []func(*panelIDs) (*dashboard.RowBuilder, []cog.Builder[dashboard.Panel]){
		curvatureRow, trainingRow, costRow,
	} {
		r, panels := row(ids)
		d.WithRow(r)
		for _, p := range panels {
			d.WithPanel(p)
		}
	}
	return d.Build()
}

// runSel selects metric for the dashboard's single run.
func runSel(metric string, extra ...string) string { return sel(metric, false, extra...) }

// probeWindow is the range selector of the probe-window variable.
const probeWindow = "[$" + varWindow + "]"

// curvatureRow: the spectrum's edges, the trace, the density and the
// per-layer quantities.
func curvatureRow(ids *panelIDs) (*dashboard.RowBuilder, []cog.Builder[dashboard.Panel]) {
	run := runSel
	row := dashboard.NewRowBuilder("Curvature").Id(ids.next())
	lambda := timeSeries(ids, "Top Hessian eigenvalues λ1..k vs 2/η",
		"Top eigenvalues of the loss Hessian. λ1 (bold) comes from every probe, light or full: the dense series. "+
			"λ2..k come from full probes only and hold their value between them (see the last full probe's step). "+
			"The dashed line is 2/η from the learning rate: "+
			"under (S)GD the sharpness λ1 rises towards it and hovers there (edge of stability, Cohen et al. 2021). "+
			"The dotted line is the optimiser's own threshold: 2/η for SGD (on top of the dashed one), (2+2β1)/(η(1−β1)) for Adam.",
		"none", 16, 9,
		target{run(metrics.TopEigenvalue, metrics.LabelRank+`="1"`), "λ1"},
		target{run(metrics.TopEigenvalue, metrics.LabelRank+`!="1"`), "λ{{" + metrics.LabelRank + "}} (full probes)"},
		target{"2 / " + run(metrics.TrainingLR), "2/η"},
		target{run(metrics.SharpnessThreshold), "optimiser threshold"},
	).
		OverrideByName("λ1", []dashboard.DynamicConfigValue{prop("custom.lineWidth", 2)}).
		OverrideByName("2/η", []dashboard.DynamicConfigValue{dashed(), fixedColor("red"), prop("custom.lineWidth", 2)}).
		OverrideByName("optimiser threshold", []dashboard.DynamicConfigValue{dotted(), fixedColor("orange")})

	ratio := statPanel(ids, "Sharpness ratio",
		"λ1 divided by the optimiser's edge-of-stability threshold (2/η for SGD, (2+2β1)/(η(1−β1)) for Adam). "+
			"≥ 1 means the run sits at or beyond the edge of stability.",
		"none", 4, 9, run(metrics.SharpnessRatio), "λ1 / threshold",
		[]dashboard.Threshold{threshold(nil, "green"), threshold(cog.ToPtr(0.8), "yellow"), threshold(cog.ToPtr(1.0), "red")})

	step := statPanel(ids, "Last probed step",
		"Training step of the latest probe, light or full, and of the latest full probe, which the full-only panels "+
			"(trace, density, blocks, λ2..k) show: Prometheus plots wall time, this relates it to steps.",
		"none", 4, 9, run(metrics.Step), "probe",
		[]dashboard.Threshold{threshold(nil, "blue")}).
		WithTarget(query(refID(1), run(metrics.FullProbeStep), "full probe")).
		Decimals(0)

	return row, append([]cog.Builder[dashboard.Panel]{lambda, ratio, step}, spectrumPanels(ids)...)
}

// spectrumPanels: the trace, the density and the per-layer quantities,
// from full probes, and both ends of the spectrum with their certificates.
func spectrumPanels(ids *panelIDs) []cog.Builder[dashboard.Panel] {
	run := runSel
	tr := run(metrics.Trace)
	se := run(metrics.TraceStdErr)
	trace := timeSeries(ids, "Hessian trace ± 2·stderr",
		"Stochastic trace estimate from full probes; the band is ±2 standard errors of the estimator (its certificate).",
		"none", 12, 9,
		target{tr, "tr(H)"},
		target{tr + " - 2 * " + se, "tr(H) − 2·stderr"},
		target{tr + " + 2 * " + se, "tr(H) + 2·stderr"},
	).
		OverrideByName("tr(H) + 2·stderr", []dashboard.DynamicConfigValue{
			prop("custom.fillBelowTo", "tr(H) − 2·stderr"), prop("custom.lineWidth", 0),
			prop("custom.fillOpacity", 20), fixedColor("blue"), hiddenFromLegend(),
		}).
		OverrideByName("tr(H) − 2·stderr", []dashboard.DynamicConfigValue{
			prop("custom.lineWidth", 0), fixedColor("blue"), hiddenFromLegend(),
		}).
		OverrideByName("tr(H)", []dashboard.DynamicConfigValue{fixedColor("dark-blue"), prop("custom.lineWidth", 2)})

	esd := cumulativeHeatmap(ids, "Eigenvalue spectral density",
		"Spectral density from stochastic Lanczos quadrature, exported as a cumulative distribution over fixed, "+
			"symmetric log-spaced eigenvalue bins (le). Each column is one snapshot; colour is the mass in a bin.",
		12, 9, fmt.Sprintf("sum by (%s) (%s)", metrics.LabelLE, run(metrics.ESDCumulative)))

	blocks := timeSeries(ids, "Per-layer block traces",
		"tr(H_bb) for each parameter tensor: which layer carries the curvature.",
		"none", 12, 9,
		target{run(metrics.BlockTrace), "{{" + metrics.LabelBlock + "}}"},
	)

	residuals := timeSeries(ids, "Eigenpair residuals ‖Hv − λv‖",
		"Certificate of each eigenvalue: the residual norm of its Ritz pair. Small residuals mean converged eigenvalues.",
		"none", 12, 9,
		target{run(metrics.EigenvalueResidual), "rank {{" + metrics.LabelRank + "}}"},
		target{run(metrics.MinEigenvalueResidual), "λmin"},
	).ScaleDistribution(common.NewScaleDistributionConfigBuilder().Type(common.ScaleDistributionLog).Log(10))

	lmin := run(metrics.MinEigenvalue)
	negative := timeSeries(ids, "Both ends: λmin and negative curvature",
		"The smallest eigenvalue λmin (from the same Krylov space as the top-k, with its residual as certificate), "+
			"the ratio |λmin|/λ1 (right axis; above 1 the loss curves down more steeply than up, as in a diverging run) "+
			"and the share of the spectral density below zero.",
		"none", 12, 9,
		target{lmin, "λmin"},
		target{run(metrics.NegativeCurvature), "|λmin|/λ1"},
		target{run(metrics.ESDNegativeMass), "ESD mass below 0"},
	).
		OverrideByName("|λmin|/λ1", []dashboard.DynamicConfigValue{prop("custom.axisPlacement", "right"), fixedColor("red")}).
		OverrideByName("ESD mass below 0", []dashboard.DynamicConfigValue{prop("custom.axisPlacement", "right"), dotted()})

	sharpness := timeSeries(ids, "Sharpness vs the optimiser's threshold",
		"The sharpness the edge-of-stability threshold refers to: λ1(P⁻¹H) with Adam's diagonal preconditioner P "+
			"(Cohen et al. 2022), λ1 for SGD, against the optimiser's threshold ((2+2β1)/(η(1−β1)) for Adam).",
		"none", 12, 9,
		target{run(metrics.PreconditionedTopEigenvalue) + " or max without(" + metrics.LabelRank + ") (" +
			run(metrics.TopEigenvalue, metrics.LabelRank+`="1"`) + ")", "sharpness"},
		target{run(metrics.SharpnessThreshold), "threshold"},
	).
		OverrideByName("threshold", []dashboard.DynamicConfigValue{dashed(), fixedColor("red")})

	mass := timeSeries(ids, "Top eigenvector mass per layer",
		"‖v1[layer]‖²: how the top eigenvector of H splits over the parameter tensors (stacked; sums to 1).",
		"percentunit", 12, 9,
		target{run(metrics.EigenvectorBlockMass), "{{" + metrics.LabelBlock + "}}"},
	).Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal)).FillOpacity(40)

	blockEig := timeSeries(ids, "Layer-wise sharpness λ1(H_bb)",
		"Top eigenvalue of each layer's diagonal Hessian block, probed every --block-eigen-every probes. "+
			"By interlacing each is at most λ1 of the whole H.",
		"none", 12, 9,
		target{run(metrics.BlockTopEigenvalue), "{{" + metrics.LabelBlock + "}}"},
	)

	return []cog.Builder[dashboard.Panel]{trace, esd, blocks, residuals, negative, sharpness, mass, blockEig}
}

// trainingRow: loss and learning rate.
func trainingRow(ids *panelIDs) (*dashboard.RowBuilder, []cog.Builder[dashboard.Panel]) {
	run := runSel
	row := dashboard.NewRowBuilder("Training").Id(ids.next())
	loss := timeSeries(ids, "Training loss", "Loss at the probed steps.", "none", 12, 8,
		target{run(metrics.TrainingLoss), "loss"})

	lr := timeSeries(ids, "Learning rate", "Learning rate η at the probed steps.", "none", 12, 8,
		target{run(metrics.TrainingLR), "η"})

	return row, []cog.Builder[dashboard.Panel]{loss, lr}
}

// costRow: what the probes cost, how they fail, and which kinds ran.
func costRow(ids *panelIDs) (*dashboard.RowBuilder, []cog.Builder[dashboard.Panel]) {
	run, window := runSel, probeWindow
	row := dashboard.NewRowBuilder("Probe cost").Id(ids.next())
	hvps := timeSeries(ids, "HVPs per probe",
		"Hessian-vector products spent by the last probe and on average per probe over the probe window (left axis), "+
			"and the HVP rate (right axis).",
		"none", 8, 8,
		target{run(metrics.ProbeHVPs), "HVPs (last probe)"},
		target{fmt.Sprintf("increase(%s%s) / increase(%s%s)",
			run(metrics.HVPTotal), window, run(metrics.ProbesTotal), window), "HVPs per probe (window mean)"},
		target{fmt.Sprintf("rate(%s%s)", run(metrics.HVPTotal), window), "HVPs/s"},
	).OverrideByName("HVPs/s", []dashboard.DynamicConfigValue{prop("custom.axisPlacement", "right"), prop("unit", "ops")})

	bucket := run(metrics.ProbeDuration + "_bucket")
	durTargets := make([]target, 0, 4)
	for _, q := range []string{"0.5", "0.9", "0.99"} {
		durTargets = append(durTargets, target{
			fmt.Sprintf("histogram_quantile(%s, sum by (%s) (rate(%s%s)))", q, metrics.LabelLE, bucket, window),
			"p" + strings.TrimPrefix(q, "0."),
		})
	}
	durTargets = append(durTargets, target{
		fmt.Sprintf("rate(%s%s) / rate(%s%s)",
			run(metrics.ProbeDuration+"_sum"), window, run(metrics.ProbeDuration+"_count"), window),
		"mean",
	})
	duration := timeSeries(ids, "Probe duration quantiles",
		"Quantiles of the probe wall time over the probe window, from the probe-duration histogram.",
		"s", 8, 8, durTargets...)

	kinds := timeSeries(ids, "Probes by kind and reason",
		"Probes over the probe window by kind (light: λ1 and λmin at a due step; full: every estimate) and by why "+
			"they were taken: scheduled, paid for by the overhead budget, or brought forward by a trigger "+
			"(threshold, jump, negative-curvature, failure), or final.",
		"none", 16, 8,
		target{fmt.Sprintf("sum by (%s, %s) (increase(%s%s))", metrics.LabelKind, metrics.LabelReason,
			run(metrics.ProbesByKind), window), "{{" + metrics.LabelKind + "}} {{" + metrics.LabelReason + "}}"},
	).DrawStyle(common.GraphDrawStyleBars).FillOpacity(60).
		Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))

	fullAge := timeSeries(ids, "Steps since the last full probe",
		"How old the full-only estimates are, in training steps: the latest probe's step minus the latest full probe's.",
		"none", 8, 8,
		target{run(metrics.Step) + " - " + run(metrics.FullProbeStep), "steps"},
	)

	failures := timeSeries(ids, "Probe failures",
		"Failed probes per reason over the probe window (NaN, panic, timeout, budget, error). "+
			"A failed probe never stops training; it is recorded here and in the store.",
		"none", 8, 8,
		target{fmt.Sprintf("sum by (%s) (increase(%s%s))", metrics.LabelReason, run(metrics.ProbeFailures), window),
			"{{" + metrics.LabelReason + "}}"},
	).DrawStyle(common.GraphDrawStyleBars).FillOpacity(60)

	return row, []cog.Builder[dashboard.Panel]{hvps, duration, failures, kinds, fullAge}
}
