package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

// serve answers the live monitor's JSON API and /metrics from a finished
// store, with every gauge equal to the run's latest good snapshot.
func TestServeFinishedStore(t *testing.T) {
	path, want := inspFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"serve", "--db", path, "--listen", "127.0.0.1:0"}, pw, &stderr)
		pw.Close()
		done <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("serve printed nothing: %v (stderr %q)", err, stderr.String())
	}
	go io.Copy(io.Discard, pr)
	m := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	base := "http://" + m[1]
	get := func(p string) []byte {
		t.Helper()
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v %s", p, resp.StatusCode, err, b)
		}
		return b
	}

	st, err := store.Open(path, store.Options{ReadOnly: true}) // a second reader: shared lock
	if err != nil {
		t.Fatalf("a second read-only open while serving: %v", err)
	}
	sums, err := st.Runs()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	var runs []snapshot.RunSummary
	if err := json.Unmarshal(get("/api/runs"), &runs); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sums, runs); diff != "" {
		t.Errorf("/api/runs differs from the store (-store +api):\n%s", diff)
	}
	var snaps []snapshot.JSONSnapshot
	if err := json.Unmarshal(get("/api/runs/alpha/snapshots?from=10&to=30"), &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 3 || snaps[0].Step != 10 || snaps[2].Step != 30 {
		t.Errorf("snapshots 10..30: got %d", len(snaps))
	}

	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(get("/metrics")))
	if err != nil {
		t.Fatal(err)
	}
	gauge := func(name string, labels map[string]string) (float64, bool) {
		for _, mm := range fams[name].GetMetric() {
			ok := true
			for _, lp := range mm.GetLabel() {
				if v, has := labels[lp.GetName()]; has && v != lp.GetValue() {
					ok = false
				}
			}
			if ok {
				return mm.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	for run, ss := range want {
		last := ss[len(ss)-1] // the latest snapshot of each fixture run succeeded
		for k, l := range last.Eigenvalues {
			got, ok := gauge(metrics.TopEigenvalue, map[string]string{"run": run, "rank": string(rune('1' + k))})
			if !ok || got != l {
				t.Errorf("%s λ%d gauge %v (%v), want %v", run, k+1, got, ok, l)
			}
		}
		if got, ok := gauge(metrics.Step, map[string]string{"run": run}); !ok || got != float64(last.Step) {
			t.Errorf("%s step gauge %v, want %d", run, got, last.Step)
		}
		if last.Trace != nil {
			if got, _ := gauge(metrics.Trace, map[string]string{"run": run}); got != last.Trace.Value {
				t.Errorf("%s trace gauge %v, want %v", run, got, last.Trace.Value)
			}
		}
	}
	if f := fams[metrics.ProbeFailures]; f == nil {
		t.Error("no failure counter")
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exited %d after cancel: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop after its context was cancelled")
	}
}
