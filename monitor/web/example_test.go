package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/hessmon/hessmon/monitor/api"
	"github.com/hessmon/hessmon/monitor/web"
	"github.com/hessmon/hessmon/snapshot"
)

// runs is a snapshot source with no runs; a live program passes its store.
type runs struct{}

func (runs) Runs() ([]snapshot.RunSummary, error) { return nil, nil }
func (runs) Snapshots(run string, from, to int64) ([]snapshot.Snapshot, error) {
	return nil, fmt.Errorf("%q: %w", run, snapshot.ErrUnknownRun)
}

// Mount the live page next to the JSON API on your own mux: the page at /,
// the API it polls at /api/. Serve it on loopback (api.DefaultAddr) and
// open http://127.0.0.1:9464/ in a browser.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle("/api/", api.NewAPI(runs{}))
	mux.Handle("/", web.Handler())

	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/", "/static/app.js", "/api/runs"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(path, resp.Status, resp.Header.Get("Content-Type"))
	}
	// Output:
	// / 200 OK text/html; charset=utf-8
	// /static/app.js 200 OK text/javascript; charset=utf-8
	// /api/runs 200 OK application/json
}
