package web

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hessmon/hessmon/snapshot"
)

// pagedAPI is the JSON API as it answers with pagination: at most limit
// snapshots per answer, and, when more remain, the first step still to come
// in X-Hessmon-Next-From and a Link rel="next". Run "b" sends only the Link,
// so the page's fallback is exercised too. It records every from= the
// browser asks, per run.
type pagedAPI struct {
	mu    sync.Mutex
	limit int
	runs  []string
	snaps map[string][]snapshot.Snapshot
	froms map[string][]int64
}

func (a *pagedAPI) add(run string, s snapshot.Snapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Contains(a.runs, run) {
		a.runs = append(a.runs, run)
	}
	a.snaps[run] = append(a.snaps[run], s)
}

func (a *pagedAPI) requested(run string) []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.froms[run])
}

func (a *pagedAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/runs", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		var out []snapshot.RunSummary
		for i, id := range a.runs {
			sum := snapshot.NewRunSummary(snapshot.Run{ID: id, Model: "test", Started: time.Unix(int64(1000+i), 0).UTC()})
			for _, s := range a.snaps[id] {
				sum.Add(&s)
			}
			out = append(out, sum)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("GET /api/runs/{run}/snapshots", func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		run := r.PathValue("run")
		from, err := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
		if err != nil {
			http.Error(w, "from", http.StatusBadRequest)
			return
		}
		if !strings.HasPrefix(r.UserAgent(), "Go-http-client") { // the page's requests, not the test's
			a.froms[run] = append(a.froms[run], from)
		}
		var page []snapshot.JSONSnapshot
		var next int64 = -1
		for _, s := range a.snaps[run] {
			if s.Step < from {
				continue
			}
			if len(page) == a.limit {
				next = s.Step
				break
			}
			page = append(page, snapshot.NewJSONSnapshot(s))
		}
		if next >= 0 {
			if run != "b" {
				w.Header().Set("X-Hessmon-Next-From", strconv.FormatInt(next, 10))
			}
			w.Header().Set("Link", fmt.Sprintf(`</api/runs/%s/snapshots?from=%d&limit=%d>; rel="next"`, run, next, a.limit))
		}
		w.Header().Set("Content-Type", "application/json")
		if page == nil {
			page = []snapshot.JSONSnapshot{}
		}
		_ = json.NewEncoder(w).Encode(page)
	})
	return mux
}

// fakeSnapshot is a probe with every field the page draws, from a formula
// that differs per run and step.
func fakeSnapshot(run string, step int64) snapshot.Snapshot {
	k := 1.0
	if run == "b" {
		k = 1.7
	}
	x := float64(step) / 100
	l1 := k * (3 + math.Sin(x*7))
	s := snapshot.Snapshot{
		Run: run, Step: step, Time: time.Unix(step, 0).UTC(),
		Loss: k * math.Exp(-x), LearningRate: 0.05 / k, Optimizer: "sgd", Beta1: 0.9,
		SharpnessThreshold: 76 * k,
		Eigenvalues:        []float64{l1, l1 / 2, l1 / 3.3},
		Residuals:          []float64{1e-6, 1e-5, 1e-4},
		Trace: &snapshot.Trace{Value: 10 * k * (1 + x), StdErr: 0.3 + x/10, Probes: 10, Method: "hutch++", Blocks: []snapshot.BlockTrace{
			{Name: "fc1.weight", Value: 6 * k * (1 + x), StdErr: 0.2}, {Name: "fc1.bias", Value: k * x, StdErr: 0.01},
		}},
		ESD: &snapshot.ESD{
			Nodes:   []float64{-0.2, 0.01, 0.4, l1, -0.1, 0.02, 0.5, l1 * 0.99},
			Weights: []float64{0.05, 0.8, 0.1, 0.05, 0.04, 0.82, 0.09, 0.05},
			Probes:  2, Steps: 4, Sigma2: 1e-5,
		},
		HVPs: 40 + int(step%7), Seconds: 0.1 + x/50, Warm: step > 10,
	}
	for i := range s.ESD.Weights {
		s.ESD.Weights[i] /= 2 // the weights of all probes sum to 1
	}
	if run == "b" && step == 50 {
		s = snapshot.Snapshot{Run: run, Step: step, Time: s.Time, Loss: math.NaN(), LearningRate: s.LearningRate,
			HVPs: 400, Seconds: 2, Failure: "timeout", Detail: "probe exceeded 2s"}
	}
	return s
}

// TestBrowserFollowsPagesAndRuns serves the page against a paginated API
// holding two runs: the page must follow the next-page headers to load each
// run whole, draw both runs, then poll with from = last step + 1 only, and
// show new probes without a reload. It also checks that the browser
// enforces the page's Content-Security-Policy (an injected inline script
// does not run).
func TestBrowserFollowsPagesAndRuns(t *testing.T) {
	b := newBrowser(t)
	api := &pagedAPI{limit: 3, snaps: map[string][]snapshot.Snapshot{}, froms: map[string][]int64{}}
	for step := int64(10); step <= 100; step += 10 {
		api.add("a", fakeSnapshot("a", step))
		api.add("b", fakeSnapshot("b", step))
	}
	mux := http.NewServeMux()
	mux.Handle("/api/", api.handler())
	mux.Handle("/", Handler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b.do(t, 30*time.Second, chromedp.Navigate(srv.URL+"/?run=a&run=b&poll=300"))
	waitFor(t, b, "both runs loaded", `(() => { const c = window.hessmon && hessmon.chart("lambda");
		return c && c.labels.includes("b λ1") && document.querySelectorAll("#latest tbody tr").length === 2 &&
			[...document.querySelectorAll('#latest [data-field="step"]')].every((td) => td.dataset.value === "100"); })()`,
		30*time.Second)
	v := readView(t, b)
	for _, run := range []string{"a", "b"} {
		snaps := fetchSnaps(t, srv.URL, run)
		if len(snaps) != 10 {
			t.Fatalf("run %s: the API test double serves %d snapshots", run, len(snaps))
		}
		checkCharts(t, v, snaps, run+" ")
		checkLatest(t, v, run, bySteps(snaps))
		checkHeatmap(t, v, run, bySteps(snaps), 100)
	}
	if len(v.Fails) != 1 || v.Fails[0]["run"] != "b" || v.Fails[0]["step"] != "50" || v.Fails[0]["failure"] != "timeout" {
		t.Errorf("failures table %v, want run b's timeout at step 50", v.Fails)
	}

	// The CSP is served and enforced: an inline script does not run.
	_, n := b.errorsSince(0)
	eval[int](t, b, `(() => { const s = document.createElement("script"); s.textContent = "window.inlineRan = 1";
		document.head.append(s); return 0; })()`)
	if ran := eval[bool](t, b, "window.inlineRan === 1"); ran {
		t.Error("an inline script ran: the Content-Security-Policy is not in force")
	}
	errs, _ := b.errorsSince(n)
	for deadline := time.Now().Add(10 * time.Second); len(errs) == 0 && time.Now().Before(deadline); errs, _ = b.errorsSince(n) {
		time.Sleep(50 * time.Millisecond) // the violation report reaches the console asynchronously
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "Content Security Policy") {
		t.Errorf("blocking the inline script logged %q, want one CSP violation", errs)
	}
	_, n = b.errorsSince(0)

	eval[int](t, b, "window.testMark = 3")
	api.add("a", fakeSnapshot("a", 110))
	api.add("a", fakeSnapshot("a", 120))
	waitFor(t, b, "the new probes", `document.querySelector('#latest tr[data-run="a"] [data-field="step"]').dataset.value === "120"`, 30*time.Second)
	v = readView(t, b)
	if v.Mark == nil || *v.Mark != 3 {
		t.Fatalf("the page reloaded (mark %v) instead of updating in place", v.Mark)
	}
	snaps := fetchSnaps(t, srv.URL, "a")
	checkCharts(t, v, snaps, "a ")
	checkLatest(t, v, "a", bySteps(snaps))
	checkHeatmap(t, v, "a", bySteps(snaps), 120)

	// Each run was read whole once, page by page, then only past its end.
	for deadline := time.Now().Add(20 * time.Second); !slices.Contains(api.requested("a"), 121) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	for run, pages := range map[string][]int64{"a": {0, 40, 70, 100}, "b": {0, 40, 70, 100}} {
		got := api.requested(run)
		if len(got) < len(pages)+1 || !slices.Equal(got[:len(pages)], pages) {
			t.Errorf("run %s: from= %v, want the pages %v then polls past the end", run, got, pages)
			continue
		}
		for _, f := range got[len(pages):] {
			if f != 101 && !(run == "a" && f == 121) {
				t.Errorf("run %s: polled from=%d, want 101 (a: then 121) only; all: %v", run, f, got)
				break
			}
		}
	}
	if got := api.requested("a"); !slices.Contains(got, 121) {
		t.Errorf("run a: never polled from=121 after the new probes: %v", got)
	}
	if errs, _ := b.errorsSince(n); len(errs) > 0 {
		t.Errorf("the page logged errors: %q", errs)
	}
	if err := os.WriteFile(filepath.Join(t.ArtifactDir(), "two-runs.png"), screenshotPNG(t, b), 0o644); err != nil {
		t.Error(err)
	}
}
