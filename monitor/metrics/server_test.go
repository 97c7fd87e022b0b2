package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hessmon/hessmon/monitor/snapshot"
	"github.com/hessmon/hessmon/store"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(filepath.Join(t.TempDir(), "hessmon.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

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
	st := newStore(t)
	if err := st.PutRun(snapshot.Run{ID: "r1", Model: "mlp", Started: time.Unix(1700000000, 0).UTC()}); err != nil {
		t.Fatal(err)
	}
	for step := int64(0); step <= 400; step += 100 {
		s := goodSnapshot("r1", step, 2)
		s.Eigenvectors = [][]float64{{1, 0}, {0, 1}}
		if step == 300 {
			s = snapshot.Snapshot{Run: "r1", Step: step, Loss: math.NaN(), SharpnessRatio: math.Inf(1), Failure: snapshot.FailNaN}
		}
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	ts := httptest.NewServer(NewServer(gatherer(NewExporter()), st))
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
	if snaps[2]["failure"] != ReasonNaN {
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

// TestJSONSnapshot checks that JSONSnapshot shadows every float of
// snapshot.Snapshot (a NaN anywhere encodes) and otherwise produces the same
// JSON as the snapshot's own tags.
func TestJSONSnapshot(t *testing.T) {
	var s snapshot.Snapshot
	setFloats(reflect.ValueOf(&s).Elem(), math.NaN())
	b, err := json.Marshal(NewJSONSnapshot(s))
	if err != nil {
		t.Fatalf("a NaN float is not shadowed: %v", err)
	}
	var nanOut map[string]any
	if err := json.Unmarshal(b, &nanOut); err != nil || nanOut["loss"] != nil {
		t.Errorf("NaN loss → %v", nanOut["loss"])
	}

	setFloats(reflect.ValueOf(&s).Elem(), 1.25)
	plain, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	shadowed, err := json.Marshal(NewJSONSnapshot(s))
	if err != nil {
		t.Fatal(err)
	}
	var a, c map[string]any
	if err := json.Unmarshal(plain, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(shadowed, &c); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, c) {
		t.Errorf("JSON differs:\n snapshot %s\n api      %s", plain, shadowed)
	}

	var f Float
	if err := json.Unmarshal([]byte("null"), &f); err != nil || !math.IsNaN(float64(f)) {
		t.Errorf("null → %v, %v", f, err)
	}
}

// setFloats sets every float64 reachable in v to x, allocating pointers and
// two-element slices on the way.
func setFloats(v reflect.Value, x float64) {
	switch v.Kind() {
	case reflect.Float64:
		v.SetFloat(x)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		setFloats(v.Elem(), x)
	case reflect.Slice:
		if v.Len() == 0 {
			v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		}
		for i := range v.Len() {
			setFloats(v.Index(i), x)
		}
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			return
		}
		for i := range v.NumField() {
			setFloats(v.Field(i), x)
		}
	}
}

// TestConcurrentScrapers has 60 clients scrape /metrics and the JSON API
// while probes are observed and stored; run it with -race.
func TestConcurrentScrapers(t *testing.T) {
	st := newStore(t)
	e := NewExporter()
	ts := httptest.NewServer(NewServer(gatherer(e), st))
	defer ts.Close()
	if err := st.PutSnapshot(goodSnapshot("live", 0, 5)); err != nil {
		t.Fatal(err)
	}
	e.Observe(goodSnapshot("live", 0, 5))

	stop := make(chan struct{})
	var writer sync.WaitGroup
	writer.Add(1)
	observed := 0
	go func() {
		defer writer.Done()
		for step := int64(1); ; step++ {
			select {
			case <-stop:
				return
			default:
			}
			s := goodSnapshot("live", step, 1+int(step%5))
			if step%7 == 0 {
				s = snapshot.Snapshot{Run: "live", Step: step, Loss: math.NaN(), Failure: snapshot.FailPanic}
			}
			// Overwrite a window of 100 steps so that the run stays small.
			stored := s
			stored.Step %= 100
			if err := st.PutSnapshot(stored); err != nil {
				t.Error(err)
				return
			}
			e.Observe(s)
			e.ObserveTraining("live", step, 1/float64(step), 0.05)
			observed++
		}
	}()

	const clients = 60
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				var url string
				switch (c + i) % 3 {
				case 0:
					url = ts.URL + "/metrics"
				case 1:
					url = ts.URL + "/api/runs"
				default:
					url = ts.URL + "/api/runs/live/snapshots?from=0"
				}
				resp, err := http.Get(url)
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("GET %s: %d %v", url, resp.StatusCode, err)
					return
				}
				if (c+i)%3 == 0 {
					fams, err := parseText(strings.NewReader(string(body)))
					if err != nil {
						errs <- fmt.Errorf("unparsable scrape: %v", err)
						return
					}
					// Every scrape sees one consistent snapshot: as many
					// residual series as eigenvalue series.
					if series(fams, TopEigenvalue, "live") != series(fams, EigenvalueResidual, "live") {
						errs <- fmt.Errorf("torn scrape")
						return
					}
				} else if !json.Valid(body) {
					errs <- fmt.Errorf("GET %s: invalid JSON", url)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	writer.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d clients × 10 requests while %d snapshots were stored and observed", clients, observed)
}

func TestReplay(t *testing.T) {
	st := newStore(t)
	for step := int64(0); step < 5; step++ {
		s := goodSnapshot("done", step*10, 3)
		if step == 3 {
			s = snapshot.Snapshot{Run: "done", Step: step * 10, HVPs: 2, Failure: snapshot.FailBudget}
		}
		if err := st.PutSnapshot(s); err != nil {
			t.Fatal(err)
		}
	}
	e := NewExporter()
	if err := e.Replay(st); err != nil {
		t.Fatal(err)
	}
	fams := scrape(t, serveExporter(t, e))
	latest := goodSnapshot("done", 40, 3)
	for name, want := range map[string]float64{
		Step: 40, Trace: latest.Trace.Value, ProbesTotal: 5,
		HVPTotal: float64(40 + 50 + 60 + 2 + 80),
	} {
		if got, _ := value(fams, name, run("done")); got != want {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
	if got, _ := value(fams, ProbeFailures, with(run("done"), LabelReason, ReasonBudget)); got != 1 {
		t.Errorf("budget failures %g", got)
	}
}

func TestServeShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, NewServer(gatherer(NewExporter()), nil)) }()
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
