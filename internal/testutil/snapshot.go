// Package testutil holds helpers that several packages' tests share.
package testutil

import (
	"time"

	"github.com/hessmon/hessmon/snapshot"
)

// Snapshot returns a good synthetic snapshot of run at step with k
// eigenvalues, every estimate filled in with values that depend on step.
func Snapshot(runID string, step int64, k int) snapshot.Snapshot {
	s := snapshot.Snapshot{
		Run: runID, Step: step, Time: time.Unix(1700000000+step, 0),
		Loss: 0.5 / float64(step+1), LearningRate: 0.05, Optimizer: "sgd",
		SharpnessThreshold: 40, SharpnessRatio: (30 + float64(step)) / 40,
		Trace: &snapshot.Trace{Value: 250 + float64(step), StdErr: 3.5, Probes: 20, Method: "hutch++",
			Blocks: []snapshot.BlockTrace{{Name: "fc1.weight", Value: 200}, {Name: "fc1.bias", Value: 50 + float64(step)}}},
		ESD: &snapshot.ESD{Nodes: []float64{-0.5, 0, 1e-5, 3, 30}, Weights: []float64{0.1, 0.4, 0.2, 0.2, 0.1},
			Probes: 1, Steps: 5, Sigma2: 1e-5},
		HVPs: 40 + int(step), Seconds: 0.3,
	}
	for i := range k {
		s.Eigenvalues = append(s.Eigenvalues, 30+float64(step)-float64(i))
		s.Residuals = append(s.Residuals, 1e-7*float64(i+1))
	}
	return s
}

// LightSnapshot returns a good synthetic light probe of run at step: λ1 and
// λmin with their residuals and the sharpness ratio, as a light probe
// measures them, and nothing of the full-only estimates (no top-2..k, trace,
// ESD or blocks). Its λ1 is that of Snapshot at the same step plus 0.5, so a
// test can tell which of the two a value came from.
func LightSnapshot(runID string, step int64) snapshot.Snapshot {
	l1 := 30.5 + float64(step)
	return snapshot.Snapshot{
		Run: runID, Step: step, Time: time.Unix(1700000000+step, 0),
		Loss: 0.5 / float64(step+1), LearningRate: 0.05, Optimizer: "sgd",
		SharpnessThreshold: 40, SharpnessRatio: l1 / 40,
		Eigenvalues: []float64{l1}, Residuals: []float64{2e-3 * l1},
		LambdaMin: &snapshot.Eigenpair{Value: -0.25 - 0.01*float64(step), Residual: 1e-3},
		HVPs:      6, Seconds: 0.02, Warm: true,
		Kind: snapshot.KindLight, Reason: snapshot.ReasonScheduled,
		Precision: snapshot.Float64, PeakBytes: 4 * 8 * 1000,
	}
}
