package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/hessmon/hessmon/monitor/metrics"
)

// Comparison dashboard identity.
const (
	ComparisonUID   = "hessmon-run-comparison"
	comparisonTitle = "hessmon / Run comparison"
)

// comparisonDashboard overlays several runs (multi-select $run), e.g. a
// BatchNorm model against the same model without it.
func comparisonDashboard() (dashboard.Dashboard, error) {
	ids := &panelIDs{}
	runs := func(metric string, extra ...string) string { return sel(metric, true, extra...) }
	perRun := "{{" + metrics.LabelRun + "}}"

	lambda1 := timeSeries(ids, "Sharpness λ1 per run",
		"Largest Hessian eigenvalue of each selected run.", "none", 12, 9,
		target{runs(metrics.TopEigenvalue, fmt.Sprintf(`%s="1"`, metrics.LabelRank)), perRun},
	)
	ratio := timeSeries(ids, "Sharpness ratio per run",
		"λ1 over each run's edge-of-stability threshold; 1 is the edge.", "none", 12, 9,
		target{runs(metrics.SharpnessRatio), perRun},
	)
	trace := timeSeries(ids, "Hessian trace per run",
		"Stochastic trace estimate of each selected run.", "none", 12, 9,
		target{runs(metrics.Trace), perRun},
	)
	loss := timeSeries(ids, "Training loss per run",
		"Training loss at the probed steps of each selected run.", "none", 12, 9,
		target{runs(metrics.TrainingLoss), perRun},
	)

	return newDashboard(ComparisonUID, comparisonTitle,
		"Several hessmon runs overlaid: sharpness, trace and loss side by side (e.g. BN against no-BN).").
		WithVariable(runVariable(true)).
		WithPanel(lambda1).
		WithPanel(ratio).
		WithPanel(trace).
		WithPanel(loss).
		Build()
}
