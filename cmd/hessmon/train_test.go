package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	dto "github.com/prometheus/client_model/go"

	"github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/store"
)

func gauge(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

// TestTrainServesLiveMetrics runs `hessmon train` and, while it trains,
// scrapes /metrics and reads the live JSON API: the gauges must equal the
// stored snapshot of the step they report. SIGINT (context cancellation)
// then stops the run cleanly with its snapshots committed.
func TestTrainServesLiveMetrics(t *testing.T) {
	addr := testutil.FreeAddr(t)
	db := t.TempDir() + "/h.db"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.SyncBuffer
	done := make(chan int, 1)
	// --async=false: every due step a full probe, so the newest snapshot
	// has the trace this test compares (asynchronously, light probes fill
	// the due steps while a full one runs).
	go func() {
		done <- run(ctx, []string{"train", "--data", "synthetic", "--steps", "100000", "--every", "5", "--probe-batch", "64",
			"--async=false", "--top", "3", "--esd-steps", "10", "--db", db, "--run", "live", "--listen", addr, "--progress", "off", "--log-level", "warn"},
			&stdout, &stderr)
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) ([]byte, error) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	var fams map[string]*dto.MetricFamily
	var scrape []byte
	deadline := time.Now().Add(90 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no probe scraped in time; stderr:\n%s", stderr.String())
		}
		select {
		case code := <-done:
			t.Fatalf("train exited early with %d: %s", code, stderr.String())
		default:
		}
		time.Sleep(200 * time.Millisecond)
		b, err := get("/metrics")
		if err != nil {
			continue
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err = parser.TextToMetricFamilies(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("unparsable scrape: %v", err)
		}
		// The full-only gauges appear with the first full probe.
		_, ok := gauge(fams, "hessian_step", map[string]string{"run": "live"})
		_, full := gauge(fams, "hessian_full_probe_step", map[string]string{"run": "live"})
		if ok && full {
			scrape = b
			break
		}
	}
	type apiSnap struct {
		Step        int64      `json:"step"`
		Kind        string     `json:"kind"`
		Eigenvalues []*float64 `json:"eigenvalues"`
		Residuals   []*float64 `json:"residuals"`
		Trace       *struct {
			Value  float64 `json:"value"`
			StdErr float64 `json:"stderr"`
		} `json:"trace"`
		HVPs int `json:"hvps"`
	}
	at := func(gaugeName string) apiSnap {
		step, _ := gauge(fams, gaugeName, map[string]string{"run": "live"})
		body, err := get(fmt.Sprintf("/api/runs/live/snapshots?from=%d&to=%d", int64(step), int64(step)))
		if err != nil {
			t.Fatal(err)
		}
		var snaps []apiSnap
		if err := json.Unmarshal(body, &snaps); err != nil || len(snaps) != 1 {
			t.Fatalf("API snapshot at %s %v: %v %s", gaugeName, step, err, body)
		}
		return snaps[0]
	}
	// The latest probe, light or full, sets λ1 and the probe's HVPs; the
	// latest full probe the other ranks and the trace.
	s, fs := at("hessian_step"), at("hessian_full_probe_step")
	if fs.Kind == "light" {
		t.Fatalf("hessian_full_probe_step %d names a light probe", fs.Step)
	}
	check := func(name string, labels map[string]string, want float64) {
		got, ok := gauge(fams, name, labels)
		if !ok {
			t.Errorf("%s%v missing from the scrape", name, labels)
			return
		}
		if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Errorf("%s%v = %v, stored snapshot has %v", name, labels, got, want)
		}
	}
	if len(s.Eigenvalues) == 0 || len(fs.Eigenvalues) == 0 {
		t.Fatalf("snapshots without eigenvalues: latest %+v, full %+v", s, fs)
	}
	for i, v := range fs.Eigenvalues {
		rank, want, res := fmt.Sprint(i+1), v, fs.Residuals[i]
		if i == 0 {
			want, res = s.Eigenvalues[0], s.Residuals[0]
		}
		check("hessian_top_eigenvalue", map[string]string{"run": "live", "rank": rank}, *want)
		check("hessian_eigenvalue_residual", map[string]string{"run": "live", "rank": rank}, *res)
	}
	if fs.Trace == nil {
		t.Fatal("full snapshot has no trace")
	}
	check("hessian_trace", map[string]string{"run": "live"}, fs.Trace.Value)
	check("hessian_trace_stderr", map[string]string{"run": "live"}, fs.Trace.StdErr)
	check("hessian_probe_hvps", map[string]string{"run": "live"}, float64(s.HVPs))
	for _, name := range []string{"hessian_esd_cumulative", "hessian_block_trace", "hessian_sharpness_ratio", "hessmon_training_loss",
		"hessmon_training_learning_rate", "hessmon_probe_duration_seconds", "hessmon_hvp_total", "hessmon_probe_failures_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s missing from the scrape", name)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(scrape)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed; .ci/run installs it")
	}
	// 50 concurrent scrapers on /metrics and the JSON API while probes run.
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				path := "/metrics"
				if (i+j)%2 == 1 {
					path = "/api/runs/live/snapshots?from=0"
				}
				b, err := get(path)
				if err != nil {
					errs <- err
					return
				}
				if path == "/metrics" && !bytes.Contains(b, []byte("hessian_top_eigenvalue")) {
					errs <- fmt.Errorf("scrape without eigenvalues")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent scraper: %v", err)
	}
	// The store is locked by the live trainer: inspection must say so fast.
	start := time.Now()
	if _, err := store.Open(db, store.Options{ReadOnly: true}); err == nil {
		t.Error("read-only open of a live store succeeded")
	} else if !strings.Contains(err.Error(), "api") && !strings.Contains(err.Error(), "API") {
		t.Errorf("locked error does not point to the live API: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("locked error took %v", d)
	}
	cancel() // as SIGINT does
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("interrupted train exited %d: %s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("train did not stop after cancellation")
	}
	if !strings.Contains(stdout.String(), "interrupted at step") {
		t.Errorf("no interruption summary:\n%s", stdout.String())
	}
	st, err := store.Open(db, store.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("store after interrupt: %v", err)
	}
	defer st.Close()
	if _, err := st.Snapshot("live", s.Step); err != nil {
		t.Errorf("scraped snapshot missing after shutdown: %v", err)
	}
}
