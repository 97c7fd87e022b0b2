package metrics

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	hmtest "github.com/hessmon/hessmon/internal/testutil"
	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/snapshot"
)

// TestConcurrentScrapers has 60 clients scrape /metrics and the JSON API
// while probes are observed and stored; run it with -race.
func TestConcurrentScrapers(t *testing.T) {
	st := hmtest.NewStore(t)
	e := NewExporter()
	ts := httptest.NewServer(api.NewServer(gatherer(e), st))
	defer ts.Close()
	if err := st.PutSnapshot(hmtest.Snapshot("live", 0, 5)); err != nil {
		t.Fatal(err)
	}
	e.Observe(hmtest.Snapshot("live", 0, 5))

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
			s := hmtest.Snapshot("live", step, 1+int(step%5))
			if step%7 == 0 {
				s = snapshot.Snapshot{Run: "live", Step: step, Loss: math.NaN(), Failure: snapshot.FailPanic}
			}
			// Overwrite a window of 100 steps so that the run stays small.
			stored := s
			stored.Step %= 100
			if err := st.ReplaceSnapshot(stored); err != nil {
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
	st := hmtest.NewStore(t)
	for step := int64(0); step < 5; step++ {
		s := hmtest.Snapshot("done", step*10, 3)
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
	latest := hmtest.Snapshot("done", 40, 3)
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
