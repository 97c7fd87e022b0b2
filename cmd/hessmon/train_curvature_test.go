package main

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/internal/testutil"
)

// A diverging run (η = 1e6) holds huge negative curvature while λ1 looks
// flat: the snapshots must show λmin ≪ 0 with a small residual, and the
// summary must say that negative curvature dominates.
func TestTrainDivergedShowsNegativeCurvature(t *testing.T) {
	db := t.TempDir() + "/div.db"
	var stdout, stderr testutil.SyncBuffer
	// MNIST, as the run: on synthetic blobs η = 1e6 saturates every
	// tanh and H is exactly 0.
	args := []string{"train", "--lr", "1e6", "--steps", "100", "--every", "50",
		"--async=false", "--listen", "off", "--progress", "off", "--run", "div", "--db", db}
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	snaps := readSnapshots(t, db, "div")
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots", len(snaps))
	}
	for _, s := range snaps {
		if s.Failed() || s.LambdaMin == nil || len(s.Eigenvalues) == 0 {
			t.Fatalf("step %d: %q %s, λmin %v", s.Step, s.Failure, s.Detail, s.LambdaMin)
		}
		l1, lmin := s.Eigenvalues[0], s.LambdaMin
		t.Logf("step %d: λ1 %.3g, λmin %.6g ± %.2g, trace %.4g", s.Step, l1, lmin.Value, lmin.Residual, s.Trace.Value)
		if !(lmin.Value < 0) || math.Abs(lmin.Value) < 1e3*math.Max(math.Abs(l1), 1e-300) || lmin.Residual > 1e-3*math.Abs(lmin.Value) {
			t.Errorf("step %d: λmin %v (residual %v) against λ1 %v: want λmin ≪ 0, certified", s.Step, lmin.Value, lmin.Residual, l1)
		}
		if r, ok := s.NegativeCurvatureRatio(); !ok || r <= 1 {
			t.Errorf("step %d: negative-curvature ratio %v, want > 1", s.Step, r)
		}
	}
	if out := stdout.String(); !strings.Contains(out, "negative curvature dominates") {
		t.Errorf("summary does not warn of negative curvature:\n%s", out)
	}
}

// An Adam run stores the raw and the preconditioned λ1, and the sharpness
// ratio is λ1(P⁻¹H) over Adam's threshold 38/η.
func TestTrainAdamPreconditionedSharpness(t *testing.T) {
	db := t.TempDir() + "/adam.db"
	var stdout, stderr testutil.SyncBuffer
	args := []string{"train", "--data", "synthetic", "--hidden", "16", "--optimizer", "adam", "--lr", "1e-3", "--steps", "40",
		"--every", "20", "--async=false", "--listen", "off", "--progress", "off", "--run", "adam", "--db", db}
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	for _, s := range readSnapshots(t, db, "adam") {
		p := s.PreconditionedLambda1
		if s.Failed() || p == nil || len(s.Eigenvalues) == 0 {
			t.Fatalf("step %d: %q %s, preconditioned %v", s.Step, s.Failure, s.Detail, p)
		}
		want := 38 / 1e-3 // (2+2β1)/(η(1−β1)) at β1 = 0.9
		if math.Abs(s.SharpnessThreshold-want) > 1e-9*want || math.Abs(s.SharpnessRatio-p.Value/want) > 1e-12*p.Value/want {
			t.Errorf("step %d: threshold %v ratio %v, want %v and λ1(P⁻¹H)/threshold = %v", s.Step, s.SharpnessThreshold, s.SharpnessRatio, want, p.Value/want)
		}
		if p.Residual > 1e-3*math.Abs(p.Value) {
			t.Errorf("step %d: preconditioned λ1 %v with residual %v", s.Step, p.Value, p.Residual)
		}
		t.Logf("step %d: λ1 %.4g, λ1(P⁻¹H) %.4g ± %.2g, ratio %.3g", s.Step, s.Eigenvalues[0], p.Value, p.Residual, s.SharpnessRatio)
	}
}
