package web

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hessmon/hessmon/snapshot"
)

// lightSnapshot is fakeSnapshot's probe as a light probe measures it: λ1
// and λmin with residuals, no λ2..k, trace, ESD or blocks.
func lightSnapshot(run string, step int64) snapshot.Snapshot {
	s := fakeSnapshot(run, step)
	s.Kind, s.Reason = snapshot.KindLight, snapshot.ReasonScheduled
	s.Eigenvalues, s.Residuals = s.Eigenvalues[:1], s.Residuals[:1]
	s.LambdaMin = &snapshot.Eigenpair{Value: -0.01 * float64(step), Residual: 1e-4}
	s.Trace, s.ESD, s.HVPs = nil, nil, 6
	return s
}

// TestBrowserLightProbes serves a run of light probes every 10 steps with
// full ones at 10, 50 and 100: λ1 must be drawn at every probe and ringed
// at the full ones only, λ2..k, the trace and the heat map must hold the
// full probes only, and the latest-probe row (a light probe) must say its
// kind and reason, show its λmin and the last full probe's trace with that
// probe's step.
func TestBrowserLightProbes(t *testing.T) {
	b := newBrowser(t)
	api := &pagedAPI{limit: 4, snaps: map[string][]snapshot.Snapshot{}, froms: map[string][]int64{}}
	fullSteps := []int64{10, 50, 100}
	for step := int64(10); step <= 110; step += 10 {
		s := lightSnapshot("m", step)
		if slices.Contains(fullSteps, step) {
			s = fakeSnapshot("m", step)
			s.Kind, s.Reason = snapshot.KindFull, snapshot.ReasonBudget
		}
		api.add("m", s)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", api.handler())
	mux.Handle("/", Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b.do(t, 30*time.Second, chromedp.Navigate(srv.URL+"/?run=m&poll=300"))
	waitFor(t, b, "the run loaded", `(() => { const c = window.hessmon && hessmon.chart("lambda");
		return c && c.labels.includes("full probe") &&
			document.querySelector('#latest tr[data-run="m"] [data-field="step"]')?.dataset.value === "110"; })()`,
		30*time.Second)
	v := readView(t, b)
	snaps := fetchSnaps(t, srv.URL, "m")
	if len(snaps) != 11 {
		t.Fatalf("the API test double serves %d snapshots", len(snaps))
	}
	checkCharts(t, v, snaps, "")
	checkLatest(t, v, "m", bySteps(snaps))
	checkHeatmap(t, v, "m", bySteps(snaps), 110)

	lam := v.Charts["lambda"]
	l1, ring, l2 := lam.column(t, "λ1"), lam.column(t, "full probe"), lam.column(t, "λ2")
	for j, x := range lam.Data[0] {
		step := int64(*x)
		full := slices.Contains(fullSteps, step)
		if l1[j] == nil || (ring[j] != nil) != full || (l2[j] != nil) != full {
			t.Errorf("step %d (full %v): λ1 %s, ring %s, λ2 %s", step, full, str(l1[j]), str(ring[j]), str(l2[j]))
		}
		if full && !same(ring[j], l1[j]) {
			t.Errorf("step %d: ring at %s, λ1 %s", step, str(ring[j]), str(l1[j]))
		}
	}
	if n := len(lam.Data[0]); n != 11 {
		t.Errorf("λ chart has %d steps, want all 11 probes", n)
	}
	var traceSteps []int64
	for _, x := range v.Charts["trace"].Data[0] {
		traceSteps = append(traceSteps, int64(*x))
	}
	if !slices.Equal(traceSteps, fullSteps) {
		t.Errorf("trace chart at steps %v, want the full probes %v", traceSteps, fullSteps)
	}

	row := v.Rows[0].Cells
	if row["kind"] != "light" || row["reason"] != "scheduled" || row["lambda_min"] != "-1.1" {
		t.Errorf("latest row kind %q reason %q λmin %q, want light, scheduled, -1.1", row["kind"], row["reason"], row["lambda_min"])
	}
	last := fakeSnapshot("m", 100)
	if got := eval[[]string](t, b, `(() => { const td = document.querySelector('#latest tr[data-run="m"] [data-field="trace"]');
		return [td.dataset.value, td.dataset.step, td.textContent]; })()`); got[0] != str(&last.Trace.Value) || got[1] != "100" {
		t.Errorf("latest row trace %q, want the full probe's %g from step 100", got, last.Trace.Value)
	}
	b.assertNoConsoleErrors(t)
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "light-probes.png"), screenshotPNG(t, b), 0o644); err != nil {
		t.Error(err)
	}
}
