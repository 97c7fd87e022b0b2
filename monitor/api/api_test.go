package api

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/monitor/metrics"
	"github.com/hessmon/hessmon/snapshot"
	"github.com/hessmon/hessmon/store"
)

var _ Source = (*store.Store)(nil)

func get(t testing.TB, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestAPI(t *testing.T) {
	st := testutil.NewStore(t)
	if err := st.PutRun(snapshot.Run{ID: "r1", Model: "mlp", Started: time.Unix(1700000000, 0).UTC()}); err != nil {
		t.Fatal(err)
	}
	for step := int64(0); step <= 400; step += 100 {
		s := testutil.Snapshot("r1", step, 2)
		s.Eigenvectors = [][]float64{{1, 0}, {0, 1}}
		if step == 300 {
			s = snapshot.Snapshot{Run: "r1", Step: step, Loss: math.NaN(), SharpnessRatio: math.Inf(1), Failure: snapshot.FailNaN}
		}
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	ts := httptest.NewServer(NewServer(registry(metrics.NewExporter()), st))
	defer ts.Close()

	code, body := get(t, ts.URL+"/api/runs")
	var runs []snapshot.RunSummary
	if code != 200 || json.Unmarshal(body, &runs) != nil || len(runs) != 1 {
		t.Fatalf("/api/runs: %d %s", code, body)
	}
	if r := runs[0]; r.ID != "r1" || r.Model != "mlp" || r.Snapshots != 5 || r.Failures != 1 ||
		r.FirstStep != 0 || r.LastStep != 400 || *r.FirstLambda1 != 30 || *r.LastLambda1 != 430 {
		t.Errorf("summary %+v", r)
	}

	code, body = get(t, ts.URL+"/api/runs/r1/snapshots?from=100&to=300")
	if code != 200 {
		t.Fatalf("snapshots: %d %s", code, body)
	}
	var snaps []map[string]any
	if err := json.Unmarshal(body, &snaps); err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 3 || snaps[0]["step"] != 100.0 || snaps[2]["step"] != 300.0 {
		t.Fatalf("steps: %s", body)
	}
	if snaps[0]["eigenvectors"] != nil {
		t.Error("eigenvectors served without vectors=true")
	}
	if ev := snaps[0]["eigenvalues"].([]any); ev[0] != 130.0 {
		t.Errorf("eigenvalues %v", ev)
	}
	if v, ok := snaps[2]["loss"]; !ok || v != nil {
		t.Errorf("NaN loss served as %v (present %v), want null", v, ok)
	}
	if snaps[2]["failure"] != metrics.ReasonNaN {
		t.Errorf("failure %v", snaps[2]["failure"])
	}
	_, body = get(t, ts.URL+"/api/runs/r1/snapshots?from=400&vectors=true")
	if !strings.Contains(string(body), `"eigenvectors":[[1,0],[0,1]]`) {
		t.Errorf("vectors=true: %s", body)
	}
	code, body = get(t, ts.URL+"/api/runs/r1/snapshots")
	if err := json.Unmarshal(body, &snaps); code != 200 || err != nil || len(snaps) != 5 {
		t.Errorf("all snapshots: %d, %d", code, len(snaps))
	}

	for _, c := range []struct {
		path string
		code int
	}{
		{"/api/runs/nope/snapshots", 404},
		{"/api/runs/r1/snapshots?from=x", 400},
		{"/api/runs/r1/snapshots?to=-3", 400},
		{"/api/runs/r1/snapshots?from=5&to=4", 400},
		{"/api/runs/r1/snapshots?vectors=maybe", 400},
		{"/api/nothing", 404},
	} {
		code, body := get(t, ts.URL+c.path)
		var e struct{ Error string }
		if code != c.code {
			t.Errorf("%s: %d, want %d", c.path, code, c.code)
		}
		if c.code != 404 || strings.HasPrefix(c.path, "/api/runs/") {
			if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
				t.Errorf("%s: body %q is not a JSON error", c.path, body)
			}
		}
	}
	code, body = get(t, ts.URL+"/healthz")
	if code != 200 || string(body) != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	for _, path := range []string{"/metrics", "/api/runs", "/api/runs/r1/snapshots", "/healthz"} {
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
			req, _ := http.NewRequest(m, ts.URL+path, strings.NewReader("{}"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", m, path, resp.StatusCode)
			}
		}
	}
}

func TestServeShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, NewServer(registry(metrics.NewExporter()), nil)) }()
	code, _ := get(t, "http://"+ln.Addr().String()+"/healthz")
	if code != 200 {
		t.Fatalf("healthz %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("after cancel: %v", err)
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}

	// A taken port is an error, not a hang.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if err := Serve(context.Background(), busy.Addr().String(), http.NotFoundHandler()); err == nil {
		t.Error("Serve on a taken port succeeded")
	}
}

// TestStartServesUntilStopped: Start listens on a free port, serves the
// handler, and stop shuts it down so that the port refuses connections.
func TestStartServesUntilStopped(t *testing.T) {
	at, stop, err := Start("127.0.0.1:0", NewServer(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + at.String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %s", resp.Status)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := http.Get("http://" + at.String() + "/healthz"); err == nil {
		t.Error("the server still answers after stop")
	}
}

func registry(e *metrics.Exporter) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	return reg
}
