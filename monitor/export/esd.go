package export

import (
	"cmp"
	"math"
	"slices"

	"gonum.org/v1/gonum/stat"

	"github.com/hessmon/hessmon/estimators"
	"github.com/hessmon/hessmon/snapshot"
)

// ESDSummary condenses a stored ESD: its certificate (probes, Lanczos steps,
// kernel variance), the spectral moments tr(H^j)/n that the quadrature gets
// exactly up to the probes' Monte Carlo error, the extreme Ritz values, the
// negative mass, and quantiles of the spectral measure.
type ESDSummary struct {
	Probes       int             `json:"probes"`
	Steps        int             `json:"steps"`
	Sigma2       snapshot.Float  `json:"sigma2"`
	Mean         snapshot.Float  `json:"mean"`
	MeanStdErr   snapshot.Float  `json:"mean_stderr"`
	Moment2      snapshot.Float  `json:"moment2"`
	Moment2Err   snapshot.Float  `json:"moment2_stderr"`
	MinNode      snapshot.Float  `json:"min_node"`
	MaxNode      snapshot.Float  `json:"max_node"`
	NegativeMass snapshot.Float  `json:"negative_mass"` // weight of nodes < −0.1%·max|node|
	Quantiles    []QuantileValue `json:"quantiles"`
}

// QuantileValue is one quantile of the spectral measure.
type QuantileValue struct {
	P     float64        `json:"p"`
	Value snapshot.Float `json:"value"`
}

// NegativeTol is the fraction of the largest |node| below zero that a node
// must reach to count as negative curvature: the spike at zero lands a hair
// either side of it and is not curvature.
const NegativeTol = 1e-3

// Quantiles are the levels SummarizeESD reports.
func Quantiles() []float64 { return []float64{0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999} }

// SummarizeESD returns the summary of e, nil for a nil e. Fields that a
// malformed quadrature (node and weight counts that do not match its probes
// and steps, no positive weight) cannot give are NaN.
func SummarizeESD(e *snapshot.ESD) *ESDSummary {
	if e == nil {
		return nil
	}
	out := &ESDSummary{Probes: e.Probes, Steps: e.Steps, Sigma2: snapshot.Float(e.Sigma2)}
	nan := snapshot.Float(math.NaN())
	out.Mean, out.MeanStdErr, out.Moment2, out.Moment2Err, out.MinNode, out.MaxNode, out.NegativeMass = nan, nan, nan, nan, nan, nan, nan
	if e.Probes <= 0 || e.Steps <= 0 || len(e.Nodes) != e.Probes*e.Steps || len(e.Weights) != len(e.Nodes) {
		return out
	}
	r := estimators.ESDResult{Nodes: e.Nodes, Weights: e.Weights, Probes: e.Probes, Steps: e.Steps}
	mean, se := r.Moments(2)
	out.Mean, out.MeanStdErr = snapshot.Float(mean[1]), snapshot.Float(se[1])
	out.Moment2, out.Moment2Err = snapshot.Float(mean[2]), snapshot.Float(se[2])

	type nw struct{ n, w float64 }
	var pts []nw
	var total float64
	for i, x := range e.Nodes {
		if w := e.Weights[i]; w > 0 && !math.IsNaN(x) {
			pts = append(pts, nw{x, w})
			total += w
		}
	}
	if len(pts) == 0 || !(total > 0) {
		return out
	}
	slices.SortFunc(pts, func(a, b nw) int { return cmp.Compare(a.n, b.n) })
	xs, ws := make([]float64, len(pts)), make([]float64, len(pts))
	for i, p := range pts {
		xs[i], ws[i] = p.n, p.w
	}
	out.MinNode, out.MaxNode = snapshot.Float(xs[0]), snapshot.Float(xs[len(xs)-1])
	out.NegativeMass = snapshot.Float(e.NegativeMass(NegativeTol))
	for _, p := range Quantiles() {
		out.Quantiles = append(out.Quantiles, QuantileValue{P: p, Value: snapshot.Float(stat.Quantile(p, stat.Empirical, xs, ws))})
	}
	return out
}
