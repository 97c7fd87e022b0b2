package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hessmon/hessmon/monitor/web"
)

// TestWithPageRoutes checks the CLI's one listener: the page and its files
// from monitor/web, everything else from the API handler, read-only.
func TestWithPageRoutes(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		_, _ = io.WriteString(w, "api "+r.URL.Path)
	})
	h := withPage(api)
	for _, c := range []struct {
		method, path string
		code         int
		body         string // prefix
		csp          bool
	}{
		{"GET", "/", 200, "<!doctype html>", true},
		{"HEAD", "/", 200, "", true},
		{"GET", "/static/app.js", 200, "", true},
		{"GET", "/metrics", 200, "api /metrics", false},
		{"GET", "/api/runs", 200, "api /api/runs", false},
		{"GET", "/api/runs/x/snapshots", 200, "api /api/runs/x/snapshots", false},
		{"GET", "/healthz", 200, "api /healthz", false},
		{"POST", "/", 405, "", true},
		{"PUT", "/static/app.js", 405, "", true},
		{"POST", "/api/runs", 405, "", false},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code || !strings.HasPrefix(rec.Body.String(), c.body) {
			t.Errorf("%s %s: %d %.40q, want %d %q", c.method, c.path, rec.Code, rec.Body.String(), c.code, c.body)
		}
		if got := rec.Header().Get("Content-Security-Policy"); c.csp && got != web.CSP {
			t.Errorf("%s %s: Content-Security-Policy %q", c.method, c.path, got)
		}
	}
}
