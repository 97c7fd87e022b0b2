// Package web serves hessmon's live page: a browser view of a training run's
// curvature that updates while it trains, for the user who has no Grafana
// at hand. For one run or several it shows λ1..k against the sharpness
// threshold, the trace with its ±2·stderr band, the spectral density of the
// latest probe on a log axis and over steps as a heat map, block traces,
// loss and learning rate, and the probes' cost and failures. λ1 is the
// dense series, from every probe, light or full, with the full probes
// ringed; λ2..k, the trace, the densities and the block traces come from
// full probes, and the latest-probe table says each probe's kind and reason
// and, after a light probe, the step of the full probe its trace is from.
//
// The page is static HTML, CSS and JavaScript embedded in the binary; its
// charts are drawn by uPlot, vendored from npm at the version pinned in
// uplot.pin (refresh-uplot.sh updates it). uPlot rather than SVG rendered
// on the server with monitor/plot: it is 51 kB with no dependencies, draws
// thousands of points on a canvas, updates a chart in place on each poll,
// and gives hover values and zoom. Nothing is loaded from another
// origin, so the page works offline, and the Content-Security-Policy that
// Handler sends allows the page's own files only: no inline script or style,
// no frames, no forms.
//
// The page reads the monitor's read-only JSON API (see monitor/metrics) at
// api/ relative to its own URL, polling GET api/runs and
// GET api/runs/{run}/snapshots?from= with from one past the last step it has,
// and following the API's next-page headers. Mount both on one mux:
//
//	mux := http.NewServeMux()
//	mux.Handle("/api/", api.NewAPI(src)) // the JSON API over your store
//	mux.Handle("/", web.Handler())           // the page at /, its files under /static/
//
// Under a prefix, strip it from both: the page at /hessmon/ then reads
// /hessmon/api/.
package web

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"time"
)

// static holds the page and its assets; embed makes the page work offline
// and keeps the binary self-contained.
//
//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of every response of Handler: the
// page's own scripts, styles, images and API requests ('self'), nothing
// inline, nothing framed, no forms, no base-URL rewriting.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler returns the read-only handler of the live page: GET (and HEAD) /
// serves the page and /static/… its files; other paths get 404, other
// methods 405. Mount it at "/" next to the JSON API (see the package
// documentation).
func Handler() http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time; a test covers it
	}
	index, err := fs.ReadFile(files, "index.html")
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
	})
	mux.HandleFunc("GET /static/{file...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		// Files only: no directory listings, and index.html only at /.
		if st, err := fs.Stat(files, name); err != nil || st.IsDir() || path.Base(name) == "index.html" {
			http.NotFound(w, r)
			return
		}
		http.ServeFileFS(w, r, files, name)
	})
	return secure(mux)
}

// secure adds the security headers to every response, errors included.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		// The embedded files change with the binary; revalidate each load.
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
